// The reader of each stream format, by name: the provider calls' thread makes them from a call's
// format (the main thread makes its own from the provider).
import type { StreamDecoder, StreamFormat } from './types.js';
import { OpenAIDecoder } from './openai.js';
import { AnthropicDecoder } from './anthropic.js';

export function decoderFor(format: StreamFormat): StreamDecoder {
  return format === 'anthropic' ? new AnthropicDecoder() : new OpenAIDecoder();
}
