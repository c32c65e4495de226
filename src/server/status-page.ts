/**
 * `GET /`: the status page for people. One self-contained HTML page (no
 * external asset: it works offline and on a phone); a small inline script
 * refreshes its figures from `GET /status.json`, which carries them formatted
 * by the same functions, so the page and its refreshes always agree.
 */
import type { Bucket, StatusData } from './status-data.js'

/** The formatted figures the page shows and its script refreshes. */
export interface StatusView {
  /** Text of the elements with `data-k="<key>"`. */
  readonly figures: Record<string, string>
  /** Width in percent of the bars with `data-bar="<key>"`. */
  readonly bars: Record<string, number>
  /** Rows of the tables with `id="<key>"` (tbody). */
  readonly tables: Record<string, string[][]>
  /** The chart, inline SVG. */
  readonly chart: string
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** Bytes as people read them (binary units). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = n
  let i = -1
  do {
    v /= 1024
    i++
  } while (v >= 1024 && i < units.length - 1)
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`
}

/** A hit ratio as shown: `75.0 %`, or `–` before any hit or miss. */
export function formatRatio(r: number | null): string {
  return r === null ? '–' : `${(r * 100).toFixed(1)} %`
}

function ago(at: number, now: number): string {
  const s = Math.max(0, Math.round((now - at) / 1000))
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`
}

function hhmm(ms: number): string {
  return new Date(ms).toISOString().slice(11, 16)
}

/** Draws the last hour: requests per minute (hits, misses, others stacked) and the hit ratio. */
export function renderChart(history: readonly Bucket[]): string {
  const W = 600
  const H = 150
  const top = 18
  const bottom = 126
  const bw = W / Math.max(1, history.length)
  const max = Math.max(1, ...history.map((b) => b.hits + b.misses + b.other))
  const y = (v: number) => bottom - (v / max) * (bottom - top)
  const parts: string[] = []
  const points: string[] = []
  history.forEach((b, i) => {
    const x = i * bw
    let base = 0
    const tip = `${hhmm(b.start)} UTC: ${b.hits} hits, ${b.misses} misses, ${b.other} other, ${formatBytes(b.bytes)} served`
    const bars: string[] = []
    for (const [v, cls] of [[b.hits, 'h'], [b.misses, 'm'], [b.other, 'o']] as const) {
      if (v === 0) continue
      bars.push(`<rect class="${cls}" x="${(x + 0.5).toFixed(1)}" y="${y(base + v).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(y(base) - y(base + v)).toFixed(1)}"/>`)
      base += v
    }
    if (bars.length > 0) parts.push(`<g><title>${escapeHtml(tip)}</title>${bars.join('')}</g>`)
    if (b.hits + b.misses > 0) points.push(`${(x + bw / 2).toFixed(1)},${(bottom - (b.hits / (b.hits + b.misses)) * (bottom - top)).toFixed(1)}`)
  })
  const ratio = points.length > 1 ? `<polyline class="r" points="${points.join(' ')}"/>` : ''
  const dots = points.map((p) => `<circle class="r" cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="2"/>`).join('')
  const first = history[0]
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="requests per minute and hit ratio, last hour" xmlns="http://www.w3.org/2000/svg">
<line class="ax" x1="0" y1="${bottom}" x2="${W}" y2="${bottom}"/><line class="ax" x1="0" y1="${top}" x2="${W}" y2="${top}" stroke-dasharray="3 3"/>
${parts.join('')}${ratio}${dots}
<text x="2" y="${top - 2}">${max} req/min · 100 % hit ratio</text>
<text x="2" y="${H - 4}">${first ? `${hhmm(first.start)} UTC` : ''}</text><text x="${W - 2}" y="${H - 4}" text-anchor="end">now</text>
</svg>`
}

/** Formats the status for the page and its refreshes. */
export function viewOf(data: StatusData, now = Date.now()): StatusView {
  const { store } = data
  const used = store.maxBytes ? `${formatBytes(store.bytes)} of ${formatBytes(store.maxBytes)} (${((store.bytes / store.maxBytes) * 100).toFixed(1)} %)` : `${formatBytes(store.bytes)} (no limit: storage.maxSize is not set)`
  const count = (n: number | null) => (n === null ? 'counting…' : String(n))
  return {
    figures: {
      hitRatio: formatRatio(data.hitRatio),
      requests: String(data.totals.requests),
      hits: String(data.totals.hits),
      misses: String(data.totals.misses),
      other: String(data.totals.other),
      bytesServed: formatBytes(data.totals.bytes),
      bytesFetched: formatBytes(data.totals.bytesFetched),
      storeUsed: used,
      paths: count(store.paths),
      narFiles: count(store.narFiles),
      pinned: count(store.pinned),
      inFlight: String(data.downloadsInFlight),
      refusals: String(data.refusals),
      conflicts: String(data.conflicts),
      verificationFailures: String(data.verificationFailures),
      generatedAt: data.generatedAt.replace('T', ' ').slice(0, 19) + ' UTC',
    },
    bars: { store: store.maxBytes ? Math.min(100, (store.bytes / store.maxBytes) * 100) : 0 },
    tables: {
      outcomes: data.outcomes.map((o) => [o.kind, o.outcome, String(o.requests), o.kind === 'nar' ? formatBytes(o.bytes) : '']),
      upstreams: data.upstreams.map((u) => [
        u.name,
        u.url,
        u.credentialsRejected ? 'credentials rejected' : u.up ? 'up' : 'DOWN',
        String(u.consecutiveFailures),
        u.meanLatencyMs === null ? '–' : `${u.meanLatencyMs.toFixed(0)} ms`,
        String(u.requests),
        String(u.errors),
        u.lastError ? `${u.lastError.code} (${u.lastError.kind}, ${ago(u.lastError.at, now)})` : 'none',
      ]),
      recent: data.recent.map((e) => [
        e.time.replace('T', ' ').slice(0, 19),
        e.decision,
        e.storePath,
        e.reason ?? '',
        e.upstreams?.join(', ') ?? '',
        e.message ?? '',
      ]),
    },
    chart: renderChart(data.history),
  }
}

function rows(table: string[][], columns: number): string {
  if (table.length === 0) return `<tr><td colspan="${columns}" class="none">none</td></tr>`
  return table.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n')
}

function figure(key: string, label: string, view: StatusView): string {
  return `<div class="fig"><span class="v" data-k="${key}">${escapeHtml(view.figures[key] ?? '')}</span><span class="l">${label}</span></div>`
}

// Refreshes the figures every 5 s. Cells are filled with textContent: nothing from the server is parsed as HTML but the chart it drew.
const SCRIPT = `(function(){
var stale=document.getElementById('stale');
function fill(id,rows){var tb=document.getElementById(id);if(!tb)return;var n=tb.parentNode.rows[0].cells.length;tb.textContent='';
if(rows.length===0){var tr=tb.insertRow();var td=tr.insertCell();td.colSpan=n;td.className='none';td.textContent='none';return}
rows.forEach(function(r){var tr=tb.insertRow();r.forEach(function(c){tr.insertCell().textContent=c})})}
function tick(){fetch('status.json',{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.json()}).then(function(d){var v=d.view;
Object.keys(v.figures).forEach(function(k){document.querySelectorAll('[data-k="'+k+'"]').forEach(function(e){e.textContent=v.figures[k]})});
Object.keys(v.bars).forEach(function(k){document.querySelectorAll('[data-bar="'+k+'"]').forEach(function(e){e.style.width=v.bars[k]+'%'})});
Object.keys(v.tables).forEach(function(k){fill(k,v.tables[k])});
document.getElementById('chart').innerHTML=v.chart;stale.hidden=true}).catch(function(){stale.hidden=false})}
setInterval(tick,5000)})()`

const STYLE = `*{box-sizing:border-box}body{font:16px/1.45 system-ui,sans-serif;max-width:64em;margin:0 auto;padding:.8em;color:#1b1b1b;background:#fafafa}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.figs{display:flex;flex-wrap:wrap;gap:.5em}.fig{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em .7em;min-width:8.5em;flex:1}
.fig .v{display:block;font-size:1.35em;font-weight:600}.fig .l{color:#555;font-size:.85em}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.25em .6em;text-align:left;border-bottom:1px solid #eee;vertical-align:top}
#recent td:nth-child(3),#recent td:nth-child(6),#upstreams td:nth-child(2),#upstreams td:nth-child(8){overflow-wrap:anywhere}#recent td:nth-child(2),#recent td:nth-child(4){white-space:nowrap}
th{font-size:.85em;color:#555}td.none{color:#777}pre{background:#f0f0f0;padding:.6em;overflow-x:auto;white-space:pre-wrap;word-break:break-all;border-radius:4px}
code{background:#eee;padding:.05em .3em;border-radius:3px;word-break:break-all}.meter{height:.6em;background:#e4e4e4;border-radius:3px;overflow:hidden;margin-top:.3em}
.meter div{height:100%;background:#3b7dd8}#chart svg{width:100%;height:auto;background:#fff;border:1px solid #ddd;border-radius:6px}
svg .h{fill:#2a9d4b}svg .m{fill:#e08a00}svg .o{fill:#aaa}svg polyline.r{fill:none;stroke:#1f4fbf;stroke-width:1.5}svg circle.r{fill:#1f4fbf}
svg .ax{stroke:#ccc}svg text{font-size:14px;fill:#555}.key span{display:inline-block;width:.8em;height:.8em;margin:0 .2em 0 .8em}
#stale{background:#fde2e2;padding:.3em .6em;border-radius:4px}.warn{background:#fff4d6;padding:.5em .7em;border-radius:4px}`

/** Renders the status page. */
export function renderStatusPage(data: StatusData, now = Date.now()): string {
  const view = viewOf(data, now)
  const setup = data.clientSetup
  const keys = data.publicKeys.map((k) => `<li><code>${escapeHtml(k)}</code></li>`).join('')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>narthex</title><style>${STYLE}</style></head><body>
<h1>narthex</h1>
<p>A caching proxy for Nix binary caches at <code>${escapeHtml(data.url)}</code>, ${data.workers > 0 ? `${data.workers} worker processes and a core` : 'one process'}. Figures sum every process, since start; updated <span data-k="generatedAt">${escapeHtml(view.figures.generatedAt)}</span>. <span id="stale" hidden>narthex does not answer: figures are stale.</span></p>
<div class="figs">
${figure('hitRatio', 'hit ratio (narinfos and NARs)', view)}${figure('requests', 'HTTP requests', view)}${figure('hits', 'hits', view)}${figure('misses', 'misses (fetched from an upstream)', view)}${figure('other', 'absent or unavailable', view)}
${figure('bytesServed', 'NAR bytes served', view)}${figure('bytesFetched', 'NAR bytes fetched', view)}${figure('inFlight', 'downloads in flight', view)}
</div>
<h2>Last hour</h2>
<div id="chart">${view.chart}</div>
<p class="key"><span style="background:#2a9d4b"></span>hits<span style="background:#e08a00"></span>misses<span style="background:#aaa"></span>absent or unavailable<span style="background:#1f4fbf;height:.2em"></span>hit ratio</p>
<h2>Requests by outcome</h2>
<div class="scroll"><table><thead><tr><th>kind</th><th>outcome</th><th>requests</th><th>NAR bytes</th></tr></thead><tbody id="outcomes">${rows(view.tables.outcomes, 4)}</tbody></table></div>
<h2>Upstreams</h2>
<div class="scroll"><table><thead><tr><th>name</th><th>url</th><th>state</th><th>failures in a row</th><th>mean latency</th><th>requests</th><th>errors</th><th>last error</th></tr></thead><tbody id="upstreams">${rows(view.tables.upstreams, 8)}</tbody></table></div>
<h2>Store</h2>
<div class="figs">
<div class="fig" style="flex:2"><span class="v" data-k="storeUsed">${escapeHtml(view.figures.storeUsed)}</span><span class="l">disk used by NARs</span><div class="meter"><div data-bar="store" style="width:${view.bars.store}%"></div></div></div>
${figure('paths', 'paths stored', view)}${figure('narFiles', 'NARs stored', view)}${figure('pinned', 'pinned paths', view)}
</div>
<h2>Policy</h2>
<div class="figs">${figure('refusals', 'refusals', view)}${figure('conflicts', 'conflicts', view)}${figure('verificationFailures', 'NARs that failed verification', view)}</div>
<p>Latest refusals and conflicts (audit log):</p>
<div class="scroll"><table><thead><tr><th>time (UTC)</th><th>decision</th><th>path</th><th>reason</th><th>upstreams</th><th>message</th></tr></thead><tbody id="recent">${rows(view.tables.recent, 6)}</tbody></table></div>
<h2>Using this cache</h2>
<p>Signing key${data.publicKeys.length > 1 ? 's' : ''} (public):</p><ul>${keys}</ul>
<p class="warn">Set it system-wide. On a multi-user install nix ignores a user's own <code>substituters</code> line with <code>warning: ignoring untrusted substituter</code> unless the user is in <code>trusted-users</code>.</p>
<p>In <code>/etc/nix/nix.conf</code>, then <code>sudo systemctl restart nix-daemon</code>:</p>
<pre id="nixconf">${escapeHtml(setup.nixConf)}</pre>
<p>On NixOS, in <code>configuration.nix</code>, then <code>sudo nixos-rebuild switch</code>:</p>
<pre id="nixos">${escapeHtml(setup.nixos)}</pre>
<p><code>substituters</code> replaces cache.nixos.org (narthex fronts it); <code>extra-substituters</code> and <code>extra-trusted-public-keys</code> keep it as well. Or let users choose their own substituters (which makes them as powerful as root over the store): <code>${escapeHtml(setup.trustedUsers)}</code>.</p>
<p>Check that nix reaches narthex: <code>${escapeHtml(setup.check)}</code></p>
<p>${escapeHtml(setup.fallback)}</p>
<p>Metrics for Prometheus: <a href="metrics">/metrics</a>. These figures as JSON: <a href="status.json">/status.json</a>.</p>
<script>${SCRIPT}</script>
</body></html>
`
}
