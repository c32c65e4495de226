/** Trust policy: rules and the admission decision. Pure. */
export { compilePolicy, ruleFor, upstreamsToAsk, describeRule, type Policy, type PolicyInput, type Rule } from './rules.js'
export { decide, type Decision, type RefusalReason, type Source, type UpstreamAnswer } from './decide.js'
