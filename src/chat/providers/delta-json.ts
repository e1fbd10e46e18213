// JSON.parse for a provider's stream events, made cheap for the common one. Almost every event
// of a streamed reply is the same object as the one before it but for one string: the text of
// the delta (OpenAI: `"content":"…"`, Anthropic: `"text":"…"`). The first event of a shape is
// parsed in full and its text outside that string (prefix and suffix) kept; an event with the
// same prefix and suffix is that object with a new string, and only the string is decoded.
// Parsing each event was the largest single cost of a token on the server's main thread.
import { eventJson } from './sse-post.js';

/** A learned shape: the text around the one string that changes, and where that string sits. */
interface Shape {
  prefix: string;
  suffix: string;
  parsed: any;
  /** Keys from the root to the object that holds the string, then the string's own key. */
  path: (string | number)[];
  /** The caller's `isBareText` of `parsed`: an event of this shape carries nothing but its string. */
  bare: boolean;
}

/** Shapes that never repeat (a field that changes with every event) stop the learning after this many. */
const MAX_MISSES = 16;

export class DeltaJson {
  private shape: Shape | null = null;
  private misses = 0;
  private hits = 0;
  private readonly marker: string;

  /**
   * key: the field whose string changes from event to event ("content", "text"). isBareText: whether
   * an event (a learned shape's first) carries nothing its reader needs but that string.
   */
  constructor(
    private readonly key: string,
    private readonly isBareText: (event: any) => boolean = () => false,
  ) {
    this.marker = `"${key}":"`;
  }

  /** How many events were read by their string alone (tests check the fast path is taken). */
  get reused(): number {
    return this.hits;
  }

  parse(data: string): any {
    return this.eventOf(data, this.textOf(data));
  }

  /** The event of `data`, given what textOf(data) returned (a caller that read it first does not read it twice). */
  eventOf(data: string, text: string | undefined): any {
    return text !== undefined ? this.shapedWith(text) : this.parseFull(data);
  }

  /** The object a textOf hit stands for: the learned one with `text` at the key (a copy along the path). */
  shapedWith(text: string): any {
    return withStringAt(this.shape!.parsed, this.shape!.path, text);
  }

  /**
   * The changing string of `data` when `data` has the last learned shape (it stands for
   * shapedWith(that string)), without building the object; undefined otherwise (then parseFull).
   */
  textOf(data: string): string | undefined {
    const s = this.shape;
    if (!s) return undefined;
    const end = data.length - s.suffix.length;
    // Compared as slices: startsWith and endsWith were five times slower here than the parse they spare.
    if (end >= s.prefix.length && data.slice(0, s.prefix.length) === s.prefix && data.slice(end) === s.suffix) {
      const text = decodeStringBody(data.slice(s.prefix.length, end));
      if (text !== undefined) this.hits++;
      return text;
    }
    return undefined;
  }

  /** Whether a textOf hit carries nothing but its string (the learned shape passed isBareText). */
  get shapeIsBareText(): boolean {
    return this.shape?.bare ?? false;
  }

  /** JSON.parse, learning the shape. */
  parseFull(data: string): any {
    const parsed = eventJson(data);
    if (this.hits || this.misses < MAX_MISSES) {
      this.misses++;
      this.shape = this.learn(data, parsed) ?? this.shape;
    }
    return parsed;
  }

  /** The shape of `data`, when the key occurs in it once, holding a string. */
  private learn(data: string, parsed: any): Shape | null {
    const at = data.indexOf(this.marker);
    // Outside a string a quote is never escaped, so the marker is the key itself; twice, it is ambiguous.
    if (at < 0 || data.indexOf(this.marker, at + 1) >= 0) return null;
    const start = at + this.marker.length;
    const end = closingQuote(data, start);
    if (end < 0) return null;
    const path = pathTo(parsed, this.key);
    if (!path) return null;
    return { prefix: data.slice(0, start), suffix: data.slice(end), parsed, path, bare: this.isBareText(parsed) };
  }
}

/** Index of the quote that ends the JSON string whose body starts at `from`; -1 if none. */
function closingQuote(s: string, from: number): number {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x22) return i;
  }
  return -1;
}

/**
 * The string a JSON string body (the text between its quotes) stands for; undefined when it is
 * not exactly one valid string body (an unescaped quote would end it early).
 */
function decodeStringBody(body: string): string | undefined {
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    if (c === 0x22 || c === 0x5c || c < 0x20) {
      try {
        return JSON.parse(`"${body}"`);
      } catch {
        return undefined;
      }
    }
  }
  return body;
}

/** The path to the one property named `key` with a string value (depth first); null if none or several. */
function pathTo(root: unknown, key: string): (string | number)[] | null {
  let found: (string | number)[] | null = null;
  let count = 0;
  const walk = (v: unknown, path: (string | number)[]) => {
    if (count > 1 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else
      for (const [k, x] of Object.entries(v)) {
        if (k === key && typeof x === 'string') {
          count++;
          found = [...path, k];
        }
        walk(x, [...path, k]);
      }
  };
  walk(root, []);
  return count === 1 ? found : null;
}

/** A copy of `root` with the string at `path` replaced: the objects along the path are new, the rest shared. */
function withStringAt(root: any, path: (string | number)[], text: string): any {
  const copy = (v: any, i: number): any => {
    const k = path[i]!;
    const out = Array.isArray(v) ? [...v] : { ...v };
    out[k] = i === path.length - 1 ? text : copy(v[k], i + 1);
    return out;
  };
  return copy(root, 0);
}
