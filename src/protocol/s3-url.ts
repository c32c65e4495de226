/**
 * Nix's URL for a binary cache in an S3 bucket, as `nix copy --to` takes it:
 * `s3://<bucket>?region=…&endpoint=…&profile=…&scheme=…`. narthex accepts a
 * path after the bucket as a key prefix (`s3://bucket/cache`), which Nix
 * itself does not.
 */

/** Where a binary cache lives in a bucket, and how to reach it. */
export interface S3Location {
  readonly bucket: string
  /** Key prefix, empty or ending in `/`. */
  readonly prefix: string
  /** Endpoint URL with its scheme (`http://127.0.0.1:8080`); undefined: AWS's own. */
  readonly endpoint?: string | undefined
  readonly region?: string | undefined
  /** Profile of the shared credentials file; undefined: the SDK's default chain. */
  readonly profile?: string | undefined
  /** Path-style requests (`endpoint/bucket/key`); Nix uses them whenever an endpoint is set. */
  readonly forcePathStyle: boolean
}

/** Bucket names as S3 allows them (3-63 characters, lower case, digits, dots, hyphens). */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/
const KNOWN_PARAMS = new Set(['region', 'endpoint', 'profile', 'scheme'])
/** Parameters Nix defines for writing to a bucket; they mean nothing to a reader and are ignored. */
const WRITER_PARAMS = new Set(['multipart-upload', 'buffer-size', 'narinfo-compression', 'ls-compression', 'log-compression', 'compression', 'parallel-compression', 'write-nar-listing', 'secret-key', 'want-mass-query', 'priority', 'index-debug-info'])

/** Normalises a key prefix: no leading slash, one trailing slash unless empty. */
export function normalisePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, '').replace(/\/+$/, '')
  if (trimmed.split('/').some((s) => s === '.' || s === '..')) throw new Error(`S3 key prefix ${JSON.stringify(prefix)} has a "." or ".." segment`)
  return trimmed === '' ? '' : `${trimmed}/`
}

/**
 * Parses an `s3://` binary-cache URL.
 * @throws Error naming what is wrong (not s3://, bad bucket name, unknown parameter, credentials in the URL).
 */
export function parseS3Url(text: string): S3Location {
  let url: URL
  try {
    url = new URL(text)
  } catch (err) {
    throw new Error(`${JSON.stringify(text)} is not a URL`, { cause: err })
  }
  if (url.protocol !== 's3:') throw new Error(`${JSON.stringify(text)} is not an s3:// URL`)
  // The URL parser would resolve them silently, naming another prefix than the one written.
  if (/\/\.\.?(?=[/?#]|$)/.test(text.slice('s3://'.length).split('?')[0] ?? '')) throw new Error(`S3 key prefix in ${JSON.stringify(text)} has a "." or ".." segment`)
  if (url.username !== '' || url.password !== '') throw new Error('an s3:// URL carries no credentials; they come from the environment, the shared credentials file or a profile')
  const bucket = url.hostname
  if (!BUCKET.test(bucket)) throw new Error(`${JSON.stringify(bucket)} is not a valid bucket name`)
  for (const key of url.searchParams.keys()) {
    if (!KNOWN_PARAMS.has(key) && !WRITER_PARAMS.has(key)) throw new Error(`unknown s3:// URL parameter ${JSON.stringify(key)} (known: ${[...KNOWN_PARAMS].join(', ')})`)
  }
  const scheme = url.searchParams.get('scheme') ?? 'https'
  if (scheme !== 'http' && scheme !== 'https') throw new Error(`s3:// URL parameter scheme must be http or https, not ${JSON.stringify(scheme)}`)
  const endpointParam = url.searchParams.get('endpoint') ?? undefined
  let endpoint: string | undefined
  if (endpointParam !== undefined && endpointParam !== '') {
    endpoint = /^https?:\/\//.test(endpointParam) ? endpointParam : `${scheme}://${endpointParam}`
    try {
      new URL(endpoint)
    } catch (err) {
      throw new Error(`s3:// URL parameter endpoint ${JSON.stringify(endpointParam)} is not a host or URL`, { cause: err })
    }
    endpoint = endpoint.replace(/\/+$/, '')
  }
  return {
    bucket,
    prefix: normalisePrefix(decodeURIComponent(url.pathname)),
    endpoint,
    region: url.searchParams.get('region') ?? undefined,
    profile: url.searchParams.get('profile') ?? undefined,
    forcePathStyle: endpoint !== undefined,
  }
}

/** The text form of a location, without credentials (there are none), for logs and the status page. */
export function formatS3Location(loc: S3Location): string {
  const params = new URLSearchParams()
  if (loc.region !== undefined) params.set('region', loc.region)
  if (loc.endpoint !== undefined) params.set('endpoint', loc.endpoint)
  if (loc.profile !== undefined) params.set('profile', loc.profile)
  const query = params.toString()
  return `s3://${loc.bucket}/${loc.prefix}${query === '' ? '' : `?${query}`}`
}
