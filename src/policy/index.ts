/** Trust policy: rules, deny lists and the admission decision. Pure. */
export {
  compilePolicy,
  ruleFor,
  upstreamsToAsk,
  describeRule,
  type OnConflict,
  type Policy,
  type PolicyInput,
  type Rule,
} from './rules.js'
export { countsAsTrusted, withoutDeniedKeys, denyReason, isDenied, type DenyInput, type DenyList } from './deny.js'
export { decide, type Conflict, type Decision, type RefusalReason, type Source, type UpstreamAnswer } from './decide.js'
