/** Configuration: schema, validation and loading. */
export { loadConfig, buildConfig, type ConfigOverrides } from './load.js'
export { configSchema, parseByteSize, type Config, type ConfigInput, type UpstreamConfig, type RuleConfig, type PushConfig, type DenyConfig } from './schema.js'
