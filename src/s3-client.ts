/**
 * One place that makes S3 clients, for the bucket storage tier and for s3://
 * upstreams. The AWS SDK is loaded only when a bucket is configured, so a
 * single-node narthex neither loads it nor pays for it at start. Credentials
 * come from the SDK's standard chain (environment, shared credentials file,
 * profile, instance metadata); narthex never reads, stores or logs them.
 */
import type * as S3Module from '@aws-sdk/client-s3'
import type { S3Client } from '@aws-sdk/client-s3'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { S3Location } from './protocol/index.js'

/** The AWS SDK's S3 module, loaded on first use. */
export type S3Sdk = typeof S3Module

let sdk: Promise<S3Sdk> | undefined

/** Loads `@aws-sdk/client-s3` once. */
export function loadS3Sdk(): Promise<S3Sdk> {
  sdk ??= import('@aws-sdk/client-s3')
  return sdk
}

/** Options for {@link createS3Client} besides the location. */
export interface S3ClientOptions {
  /** Attempts per request, the first included (the SDK's own retry with backoff); default 3. */
  readonly maxAttempts?: number
  /** Connection and request timeouts in ms; default 5,000 / none. The request timeout ends with the response's headers. */
  readonly connectTimeoutMs?: number
  readonly requestTimeoutMs?: number
  /** The longest silence on a socket, body included, in ms; default none. */
  readonly idleTimeoutMs?: number
  /** Sockets per client; default 64. */
  readonly maxSockets?: number
}

/** Creates an S3 client for `loc` (region `us-east-1` when none is given, as the SDK needs one). */
export async function createS3Client(loc: S3Location, options: S3ClientOptions = {}): Promise<S3Client> {
  const { S3Client } = await loadS3Sdk()
  const maxSockets = options.maxSockets ?? 64
  return new S3Client({
    region: loc.region ?? 'us-east-1',
    ...(loc.endpoint !== undefined ? { endpoint: loc.endpoint } : {}),
    ...(loc.profile !== undefined ? { profile: loc.profile } : {}),
    forcePathStyle: loc.forcePathStyle,
    maxAttempts: options.maxAttempts ?? 3,
    // The SDK makes its node:http handler from these settings.
    requestHandler: {
      connectionTimeout: options.connectTimeoutMs ?? 5_000,
      // Without throwOnRequestTimeout the SDK only prints a warning when the request timeout passes.
      ...(options.requestTimeoutMs !== undefined ? { requestTimeout: options.requestTimeoutMs, throwOnRequestTimeout: true } : {}),
      ...(options.idleTimeoutMs !== undefined ? { socketTimeout: options.idleTimeoutMs } : {}),
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
  })
}

/** The object key of `relPath` (`nix-cache-info`, `<hash>.narinfo`, `nar/…`) under the location's prefix. */
export function objectKey(loc: S3Location, relPath: string): string {
  return `${loc.prefix}${relPath}`
}
