//! The AuthorizationPolicies that apply to this gateway, as the proxy
//! evaluates them: per action, per kind of filter chain, rules sorted by
//! the name Envoy's RBAC engine sorts them by.
use crate::model::{AuthzAction, AuthzRule};

/// What Istio builds for the gateway's HTTP and TCP filter chains. A
/// chain's RBAC filters differ because Istio trims rules that use HTTP
/// attributes from TCP chains ([`Rules::for_tcp`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authorization {
    /// Requests on HTTP listeners and on TLS servers that serve HTTP.
    pub http: Rules,
    /// Connections of TCP routes and TLS passthrough (and TLS terminated
    /// to a TCP route): decided once, before the first byte is forwarded.
    pub tcp: Rules,
}

impl Authorization {
    /// Whether any policy applies: without one the proxy skips the phase
    /// and the lean redirect path stays usable.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty()
    }
}

/// One chain's rules, by action; Envoy evaluates AUDIT, then DENY, then
/// ALLOW (Istio's filter order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub audit: Vec<PolicyRule>,
    pub deny: Vec<PolicyRule>,
    /// `None` when no ALLOW policy applies (everything not denied is
    /// allowed); `Some` even when empty: then nothing is allowed.
    pub allow: Option<Vec<PolicyRule>>,
    /// `istio.io/dry-run` policies: evaluated apart, logged, never enforced.
    pub dry_run_deny: Vec<PolicyRule>,
    pub dry_run_allow: Option<Vec<PolicyRule>>,
}

impl Rules {
    /// Whether no policy of any action applies.
    pub fn is_empty(&self) -> bool {
        self.audit.is_empty()
            && self.deny.is_empty()
            && self.allow.is_none()
            && self.dry_run_deny.is_empty()
            && self.dry_run_allow.is_none()
    }

    /// The list an action's (enforced or dry-run) rules go in; the ALLOW
    /// lists exist from the first ALLOW policy on, rules or not.
    pub fn list_mut(&mut self, action: AuthzAction, dry_run: bool) -> &mut Vec<PolicyRule> {
        match (action, dry_run) {
            (AuthzAction::Allow, false) => self.allow.get_or_insert_with(Vec::new),
            (AuthzAction::Allow, true) => self.dry_run_allow.get_or_insert_with(Vec::new),
            (AuthzAction::Deny, false) => &mut self.deny,
            (AuthzAction::Deny, true) => &mut self.dry_run_deny,
            // An AUDIT policy's dry-run rules are shadow rules that log
            // nothing Envoy acts on: kept with the others, as both only log.
            (AuthzAction::Audit, _) => &mut self.audit,
        }
    }

    /// Sorts every list by rule id, the order of Envoy's `std::map` of
    /// policies: the first match names the denial.
    pub fn sort(&mut self) {
        for list in [&mut self.audit, &mut self.deny, &mut self.dry_run_deny]
            .into_iter()
            .chain(self.allow.as_mut())
            .chain(self.dry_run_allow.as_mut())
        {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
}

/// One rule of one policy, under the name Envoy's RBAC filter knows it by.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRule {
    /// `ns[<ns>]-policy[<name>]-rule[<i>]`.
    pub id: String,
    /// `<ns>/<name>`: what metrics and logs count it under.
    pub policy: String,
    pub rule: AuthzRule,
}
