/**
 * The bucket several narthex nodes share, laid out as a standard Nix binary
 * cache: `<prefix>nix-cache-info`, `<prefix><hashPart>.narinfo` (narthex's
 * signed narinfo) and `<prefix>nar/<fileName>` (the verified NAR files). A
 * narinfo is only ever created, never replaced (`If-None-Match: *`), so the
 * first node to write one pins that path's NarHash for every node.
 *
 * Credentials come from the AWS SDK's chain (src/s3-client.ts); nothing here
 * reads, keeps or logs them.
 */
import { createReadStream } from 'node:fs'
import type { S3Client } from '@aws-sdk/client-s3'
import { NarthexError } from '../errors.js'
import type { S3Location } from '../protocol/index.js'
import { createS3Client, loadS3Sdk, objectKey } from '../s3-client.js'

/** The outcome of {@link Bucket.createIfAbsent}. */
export type CreateOutcome = { readonly kind: 'created' } | { readonly kind: 'exists'; readonly text: string }

const CONTENT_TYPES: ReadonlyArray<readonly [RegExp, string]> = [
  [/\.narinfo$/, 'text/x-nix-narinfo'],
  [/^nix-cache-info$/, 'text/x-nix-cache-info'],
  [/^nar\//, 'application/x-nix-nar'],
]

// Parts of a multipart upload; at most QUEUE_SIZE of them are in memory at once per upload.
const PART_SIZE = 16 * 1024 * 1024
const QUEUE_SIZE = 2
// Below this a file goes up in one PUT (lib-storage decides the same by its part size).
const SINGLE_PUT_MAX = PART_SIZE

// How long a create waits before reading itself back (see createIfAbsent).
const CONFIRM_DELAY_MS = 50

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
}

function contentTypeOf(rel: string): string {
  return CONTENT_TYPES.find(([re]) => re.test(rel))?.[1] ?? 'application/octet-stream'
}

/** An error of a bucket request, as narthex reports it (the SDK's message, never a credential). */
function unavailable(what: string, err: unknown): NarthexError {
  const status = statusOf(err)
  const name = (err as Error).name
  return new NarthexError('UPSTREAM_UNAVAILABLE', `bucket: cannot ${what}: ${status !== undefined ? `HTTP ${status} ` : ''}${name}: ${(err as Error).message}`, { cause: err })
}

/** One bucket location, with its client. */
export class Bucket {
  private constructor(
    readonly location: S3Location,
    readonly client: S3Client,
  ) {}

  /** A bucket client for `location` (the AWS SDK is loaded now). */
  static async open(location: S3Location): Promise<Bucket> {
    return new Bucket(location, await createS3Client(location))
  }

  /** The object key of a path of the binary cache (`nar/x.nar.xz`) under the prefix. */
  key(rel: string): string {
    return objectKey(this.location, rel)
  }

  /**
   * The text of a small object (a narinfo, `nix-cache-info`), or undefined when there is none.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked.
   */
  async getText(rel: string, signal?: AbortSignal): Promise<string | undefined> {
    const { GetObjectCommand } = await loadS3Sdk()
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(rel) }), { abortSignal: signal })
      return (await out.Body?.transformToString('utf8')) ?? ''
    } catch (err) {
      if (statusOf(err) === 404) return undefined
      throw unavailable(`read ${rel}`, err)
    }
  }

  /**
   * The size of an object, or undefined when there is none.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked.
   */
  async sizeOf(rel: string): Promise<number | undefined> {
    const { HeadObjectCommand } = await loadS3Sdk()
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: this.key(rel) }))
      return out.ContentLength ?? 0
    } catch (err) {
      if (statusOf(err) === 404) return undefined
      throw unavailable(`look up ${rel}`, err)
    }
  }

  /**
   * Creates a small object only if none exists (`If-None-Match: *`). When one
   * exists (412, or 409 from a store that saw a concurrent create), its text is
   * read and returned instead; nothing is ever overwritten. A create is read
   * back: a store whose conditional check is not atomic (Swift lets two
   * simultaneous creates both pass it, the later one winning) shows the
   * winner then, and the loser follows it.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked,
   *   or ignores the condition (answers 501).
   */
  async createIfAbsent(rel: string, text: string): Promise<CreateOutcome> {
    const { PutObjectCommand } = await loadS3Sdk()
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.location.bucket, Key: this.key(rel), Body: text, ContentType: contentTypeOf(rel), IfNoneMatch: '*' }),
        )
        // Long enough for a simultaneous create that also passed the check to land.
        await new Promise((r) => setTimeout(r, CONFIRM_DELAY_MS))
        const landed = await this.getText(rel)
        return landed === undefined || landed === text ? { kind: 'created' } : { kind: 'exists', text: landed }
      } catch (err) {
        if (err instanceof NarthexError) throw err
        const status = statusOf(err)
        if (status !== 412 && status !== 409) throw unavailable(`create ${rel}`, err)
      }
      const existing = await this.getText(rel)
      if (existing !== undefined) return { kind: 'exists', text: existing }
      // A 409 for a create that has not landed yet: ask again shortly.
      if (attempt >= 3) throw new NarthexError('UPSTREAM_UNAVAILABLE', `bucket: ${rel} exists and cannot be read`)
      await new Promise((r) => setTimeout(r, 100 * (attempt + 1)))
    }
  }

  /**
   * Uploads a local file to `rel`, streaming it: one PUT when small, a multipart
   * upload (`@aws-sdk/lib-storage`, a few parts in memory at a time) when large.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the upload fails (a failed
   *   multipart upload is aborted, so no partial object is left).
   */
  async uploadFile(rel: string, path: string, size: number, signal?: AbortSignal): Promise<void> {
    const params = { Bucket: this.location.bucket, Key: this.key(rel), ContentType: contentTypeOf(rel) }
    try {
      if (size <= SINGLE_PUT_MAX) {
        const { PutObjectCommand } = await loadS3Sdk()
        await this.client.send(new PutObjectCommand({ ...params, Body: createReadStream(path), ContentLength: size }), { abortSignal: signal })
        return
      }
      const { Upload } = await import('@aws-sdk/lib-storage')
      const upload = new Upload({ client: this.client, params: { ...params, Body: createReadStream(path) }, partSize: PART_SIZE, queueSize: QUEUE_SIZE, leavePartsOnError: false })
      const onAbort = () => void upload.abort().catch(() => undefined)
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        await upload.done()
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
    } catch (err) {
      if (err instanceof NarthexError) throw err
      throw unavailable(`upload ${rel}`, err)
    }
  }

  /** Closes the client's sockets. */
  close(): void {
    this.client.destroy()
  }
}
