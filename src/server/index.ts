/** The HTTP server. */
export { createNarthexServer, type ServerDeps } from './server.js'
