// The three files of undici (v7) that its own index.js puts its Pool and request API together from;
// src/undici.ts loads them instead of the whole index. Typed by undici's published declarations.
declare module 'undici/lib/dispatcher/pool.js' {
  import type { Pool } from 'undici'
  const PoolClass: typeof Pool
  export = PoolClass
}
declare module 'undici/lib/dispatcher/dispatcher.js' {
  import type { Dispatcher } from 'undici'
  const DispatcherClass: typeof Dispatcher
  export = DispatcherClass
}
declare module 'undici/lib/api/index.js' {
  const api: Record<string, unknown>
  export = api
}
