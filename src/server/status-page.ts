/**
 * `GET /`: a small status page for people.
 */

/** What the status page shows. */
export interface StatusView {
  readonly publicKey: string
  /** Every public key narthex signs with (more than one during a key rotation); clients may trust any. */
  readonly publicKeys?: readonly string[] | undefined
  readonly upstreams: ReadonlyArray<{ name: string; url: string; down: boolean; consecutiveFailures: number; credentialsRejected?: boolean }>
  readonly downloadsInFlight: number
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** Renders the status page. */
export function renderStatusPage(view: StatusView): string {
  const rows = view.upstreams
    .map(
      (u) =>
        `<tr><td>${escapeHtml(u.name)}</td><td>${escapeHtml(u.url)}</td><td>${u.credentialsRejected ? 'credentials rejected' : u.down ? 'down' : 'up'}</td><td>${u.consecutiveFailures}</td></tr>`,
    )
    .join('\n')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>narthex</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em;text-align:left}code{background:#eee;padding:.1em .3em}</style>
</head><body>
<h1>narthex</h1>
<p>A caching proxy for Nix binary caches. To use it, add to <code>nix.conf</code>:</p>
<pre>substituters = &lt;this server's URL&gt;
trusted-public-keys = ${escapeHtml((view.publicKeys ?? [view.publicKey]).join(' '))}</pre>
<h2>Upstreams</h2>
<table><tr><th>name</th><th>url</th><th>state</th><th>failures in a row</th></tr>
${rows}
</table>
<p>NAR downloads in flight: ${view.downloadsInFlight}. Metrics: <a href="/metrics">/metrics</a>.</p>
</body></html>
`
}
