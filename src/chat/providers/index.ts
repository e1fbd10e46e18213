// Which LLM providers are configured, and which one serves a chat's model.
import fs from 'node:fs';
import { ApiError } from '../../errors.js';
import type { Provider } from './types.js';

export interface ProviderSettings {
  baseUrl?: string;
  apiKey?: string;
}

export interface ProvidersConfig {
  openai?: ProviderSettings;
  anthropic?: ProviderSettings;
  /** Default model for new chats, e.g. "gpt-4o-mini" or "anthropic:claude-sonnet-4-5". */
  model?: string;
}

export const PROVIDER_NAMES = ['openai', 'anthropic'] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

export const HOW_TO_CONFIGURE =
  'no LLM provider is configured: set AIRLOCK_OPENAI_API_KEY (and AIRLOCK_OPENAI_BASE_URL for any OpenAI-compatible server such as vLLM or Ollama) ' +
  'or AIRLOCK_ANTHROPIC_API_KEY, or put {"providers":{"openai":{"baseUrl":"…","apiKey":"…"}}} in the file named by AIRLOCK_CONFIG, then restart the server';

/** Reads provider settings from the environment and the optional AIRLOCK_CONFIG JSON file. */
export function providersFromEnv(env: NodeJS.ProcessEnv = process.env): ProvidersConfig {
  let file: any = {};
  if (env.AIRLOCK_CONFIG) {
    try {
      file = JSON.parse(fs.readFileSync(env.AIRLOCK_CONFIG, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read AIRLOCK_CONFIG ${env.AIRLOCK_CONFIG}: ${(err as Error).message}`);
    }
  }
  const pick = (name: ProviderName, envPrefix: string, stdPrefix: string): ProviderSettings | undefined => {
    const f = file.providers?.[name] ?? {};
    const baseUrl = env[`${envPrefix}_BASE_URL`] || env[`${stdPrefix}_BASE_URL`] || f.baseUrl;
    const apiKey = env[`${envPrefix}_API_KEY`] || env[`${stdPrefix}_API_KEY`] || f.apiKey;
    return baseUrl || apiKey ? { baseUrl, apiKey } : undefined;
  };
  return {
    openai: pick('openai', 'AIRLOCK_OPENAI', 'OPENAI'),
    anthropic: pick('anthropic', 'AIRLOCK_ANTHROPIC', 'ANTHROPIC'),
    model: env.AIRLOCK_MODEL || file.model,
  };
}

export class Providers {
  private cache = new Map<ProviderName, Provider>();

  constructor(
    readonly config: ProvidersConfig,
    /** A request with no byte for this long fails (AIRLOCK_LLM_TIMEOUT_MS). */
    private timeoutMs: number,
  ) {}

  get configured(): ProviderName[] {
    return PROVIDER_NAMES.filter((n) => this.config[n]);
  }

  defaultModel(): string {
    if (this.config.model) return this.config.model;
    const first = this.configured[0];
    if (first === 'anthropic') return 'anthropic:claude-sonnet-4-5';
    return 'gpt-4o-mini';
  }

  /** Splits "anthropic:claude-x" into provider and model; a bare name uses the first configured provider. */
  resolve(model: string): { provider: ProviderName; model: string } {
    const i = model.indexOf(':');
    const prefix = i > 0 ? model.slice(0, i) : '';
    if ((PROVIDER_NAMES as readonly string[]).includes(prefix)) return { provider: prefix as ProviderName, model: model.slice(i + 1) };
    return { provider: this.configured[0] ?? 'openai', model };
  }

  /** Model-name patterns (SQL LIKE) no configured provider can serve; null when none is configured. */
  unservablePrefixes(): string[] | null {
    if (!this.configured.length) return null;
    return PROVIDER_NAMES.filter((n) => !this.config[n]).map((n) => `${n}:%`);
  }

  /** Throws a 422 that says how to configure a provider when the model's provider is missing. */
  check(model: string): void {
    if (!this.configured.length) throw new ApiError(422, 'no_provider', HOW_TO_CONFIGURE);
    const { provider } = this.resolve(model);
    if (!this.config[provider]) {
      const how = provider === 'anthropic' ? 'AIRLOCK_ANTHROPIC_API_KEY (and AIRLOCK_ANTHROPIC_BASE_URL for a proxy)' : 'AIRLOCK_OPENAI_API_KEY (and AIRLOCK_OPENAI_BASE_URL for any OpenAI-compatible server)';
      const have = this.configured.join(', ');
      throw new ApiError(422, 'no_provider', `model "${model}" needs the ${provider} provider, which is not configured (this server has: ${have}); set ${how} or the "${provider}" entry of the AIRLOCK_CONFIG file, then restart the server, or pick a model of ${have}`);
    }
  }

  async get(model: string): Promise<{ provider: Provider; model: string }> {
    const r = this.resolve(model);
    const settings = this.config[r.provider];
    if (!settings) throw new Error(HOW_TO_CONFIGURE);
    let p = this.cache.get(r.provider);
    if (!p) {
      const cfg = { ...settings, timeoutMs: this.timeoutMs };
      if (r.provider === 'openai') {
        const { OpenAIProvider } = await import('./openai.js');
        p = new OpenAIProvider(cfg);
      } else {
        const { AnthropicProvider } = await import('./anthropic.js');
        p = new AnthropicProvider(cfg);
      }
      this.cache.set(r.provider, p);
    }
    return { provider: p, model: r.model };
  }
}
