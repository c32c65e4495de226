/**
 * The body of a verification thread (see verifier.ts). It follows NAR files
 * while the main thread writes them to disk, each a {@link NarFileCheck}
 * (nar-check.ts), several at once, and reports how far each has read and how
 * it ended.
 */
import { parentPort } from 'node:worker_threads'
import { formatNixHash, parseNixHash } from '../protocol/index.js'
import { NarFileCheck } from './nar-check.js'
import { classifyNarError } from './nar-errors.js'
import type { FromVerifier, ToVerifier, VerifyJob } from './verifier.js'

// How often the main thread hears how far a job has read (it paces its download by it).
const READ_REPORT_STEP = 4 * 1024 * 1024

const jobs = new Map<number, NarFileCheck>()

async function run(job: VerifyJob, check: NarFileCheck): Promise<FromVerifier> {
  try {
    const { file, nar } = await check.run()
    return { type: 'done', id: job.id, fileHash: formatNixHash(file.hash), fileSize: file.size, narHash: formatNixHash(nar.hash), narSize: nar.size }
  } catch (err) {
    const e = classifyNarError(err, { file: job.path })
    return { type: 'error', id: job.id, code: e.code, message: e.message }
  }
}

function start(job: VerifyJob): void {
  let check: NarFileCheck
  try {
    check = new NarFileCheck(
      {
        path: job.path,
        compression: job.compression,
        fileHash: job.fileHash ? parseNixHash(job.fileHash) : undefined,
        fileSize: job.fileSize,
        narHash: parseNixHash(job.narHash),
        narSize: job.narSize,
        single: job.single,
      },
      { readReportBytes: READ_REPORT_STEP, onRead: (pos) => parentPort!.postMessage({ type: 'read', id: job.id, pos } satisfies FromVerifier) },
    )
  } catch (err) {
    const e = classifyNarError(err, { file: job.path })
    parentPort!.postMessage({ type: 'error', id: job.id, code: e.code, message: e.message } satisfies FromVerifier)
    return
  }
  jobs.set(job.id, check)
  void run(job, check).then((result) => {
    jobs.delete(job.id)
    parentPort!.postMessage(result)
  })
}

parentPort?.on('message', (msg: ToVerifier) => {
  switch (msg.type) {
    case 'start':
      start(msg.job)
      break
    case 'grow':
      jobs.get(msg.id)?.grow(msg.written, msg.ended)
      break
    case 'abort':
      jobs.get(msg.id)?.abort()
      break
  }
})
