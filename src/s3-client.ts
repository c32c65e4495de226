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

/** The Node.js major version the AWS SDK's releases after January 2027 require. */
const SDK_NODE_MAJOR = 22

/**
 * Loads `@aws-sdk/client-s3` once. The SDK's own notice about the Node.js
 * version is plain text on stderr, in the middle of the JSON log; it is turned
 * off here and given to the log by {@link s3SdkNodeNotice} instead.
 */
export function loadS3Sdk(): Promise<S3Sdk> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  sdk ??= import('@aws-sdk/client-s3')
  return sdk
}

/** A notice for the log when this Node.js is older than later AWS SDK releases need, else undefined. */
export function s3SdkNodeNotice(version = process.version): string | undefined {
  const major = Number(/^v(\d+)\./.exec(version)?.[1])
  if (!(major < SDK_NODE_MAJOR)) return undefined
  return `S3 is used on Node.js ${version}; AWS SDK releases after January 2027 need Node.js ${SDK_NODE_MAJOR} or later for their fixes`
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
