// Target credentials at rest: AES-256-GCM under the server key. The key comes from
// AIRLOCK_SECRET_KEY (32 bytes, base64 or hex) or from a key file generated on first start.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const TAG_BYTES = 16;

export class SecretBox {
  private constructor(private key: Buffer) {}

  static fromKey(raw: string): SecretBox {
    const key = /^[0-9a-fA-F]{64}$/.test(raw) ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
    if (key.length !== 32) throw new Error('AIRLOCK_SECRET_KEY must be 32 bytes, as 64 hex digits or base64');
    return new SecretBox(key);
  }

  /** The configured key (AIRLOCK_SECRET_KEY), else `<dataDir>/secret.key` (created 0600 when missing). */
  static load(dataDir: string, configured: string): SecretBox {
    if (configured) return SecretBox.fromKey(configured);
    const file = path.join(dataDir, 'secret.key');
    try {
      return SecretBox.fromKey(fs.readFileSync(file, 'utf8').trim());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const key = crypto.randomBytes(32).toString('base64');
    try {
      fs.writeFileSync(file, key + '\n', { mode: 0o600, flag: 'wx' });
    } catch (err) {
      // Another process created it first: use theirs.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return SecretBox.fromKey(fs.readFileSync(file, 'utf8').trim());
      throw err;
    }
    return SecretBox.fromKey(key);
  }

  /** A key for another purpose (the bus's MACs), derived from this one: the secret key itself is used for sealing only. */
  deriveKey(purpose: string): Buffer {
    return Buffer.from(crypto.hkdfSync('sha256', this.key, Buffer.alloc(0), purpose, 32));
  }

  /**
   * Seals a value for one owner (`boundTo`, the resource's id): the owner is authenticated with
   * it, so a sealed blob copied onto another row does not open there. The tag is always 16 bytes.
   */
  seal(value: unknown, boundTo: string): string {
    const iv = crypto.randomBytes(12);
    const c = crypto.createCipheriv('aes-256-gcm', this.key, iv, { authTagLength: TAG_BYTES });
    c.setAAD(Buffer.from(boundTo, 'utf8'));
    const ct = Buffer.concat([c.update(JSON.stringify(value), 'utf8'), c.final()]);
    return `v2.${iv.toString('base64')}.${c.getAuthTag().toString('base64')}.${ct.toString('base64')}`;
  }

  /** Opens what seal() sealed for the same owner; throws for anything else. */
  open<T = unknown>(sealed: string, boundTo: string): T {
    return this.decrypt<T>(sealed, 'v2', boundTo);
  }

  /**
   * Opens a blob of the first format (no owner, a tag of any length), which only the migration to
   * the current one reads (resealLegacyCredentials).
   */
  openLegacy<T = unknown>(sealed: string): T {
    return this.decrypt<T>(sealed, 'v1', null);
  }

  private decrypt<T>(sealed: string, version: 'v1' | 'v2', boundTo: string | null): T {
    const [v, iv, tag, ct] = sealed.split('.');
    if (v !== version || !iv || !tag || ct === undefined) throw new Error('unknown credential format');
    const tagBytes = Buffer.from(tag, 'base64');
    if (version === 'v2' && tagBytes.length !== TAG_BYTES) throw new Error('unknown credential format');
    const d = crypto.createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64'), version === 'v2' ? { authTagLength: TAG_BYTES } : {});
    if (boundTo !== null) d.setAAD(Buffer.from(boundTo, 'utf8'));
    d.setAuthTag(tagBytes);
    const pt = Buffer.concat([d.update(Buffer.from(ct, 'base64')), d.final()]);
    return JSON.parse(pt.toString('utf8')) as T;
  }
}
