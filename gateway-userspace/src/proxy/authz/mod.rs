//! AuthorizationPolicy at request time: Envoy's RBAC filters as Istio
//! builds them for a gateway, AUDIT then DENY then ALLOW, each walking its
//! rules in id order and stopping at the first match (`engine_impl.cc`).
//! The same decision serves the proxy and `gateway check --explain-request`.
mod matching;
pub mod metrics;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use hyper::HeaderMap;
use regex::Regex;
use serde_json::{Map, Value};

use crate::{
    model::{AuthzRule, Condition, Operation, PathMatch, Source, ValueMatch},
    plan::authz::{Authorization, PolicyRule, Rules},
};

/// What a denial names when an ALLOW filter found no rule: Envoy's
/// effective policy id `none`.
pub const NO_POLICY: &str = "none";

/// The body of Envoy's RBAC 403.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// Both chains' engines, built with the rest of what a plan serves.
#[derive(Debug, Default)]
pub struct Authorizer {
    pub http: Engine,
    pub tcp: Engine,
}

impl Authorizer {
    /// The engines for `plan`'s policies; path templates become Envoy's
    /// `uri_template` regexes here.
    pub fn new(plan: &Authorization) -> Result<Self, regex::Error> {
        Ok(Self {
            http: Engine::new(&plan.http)?,
            tcp: Engine::new(&plan.tcp)?,
        })
    }

    /// Whether no policy applies at all.
    pub fn is_empty(&self) -> bool {
        self.http.rules.is_empty() && self.tcp.rules.is_empty()
    }
}

/// One chain's RBAC filters.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Rules,
    templates: HashMap<String, Regex>,
}

/// What a request or connection is judged on.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The connection's peer (`source.ip`, `ipBlocks`).
    pub peer: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): the peer, or
    /// the address `--trusted-proxies` hops of `X-Forwarded-For` name.
    pub remote: IpAddr,
    /// The address and port the client connected to.
    pub local: SocketAddr,
    /// The TLS server name; `None` on plaintext.
    pub sni: Option<&'a str>,
    /// `None` on a TCP chain.
    pub http: Option<HttpAttributes<'a>>,
}

/// A request's HTTP attributes.
#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    pub authority: &'a str,
    pub method: &'a str,
    /// Normalised, without query or fragment (Envoy's `url_path`).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The verified JWT payload; `None` without a token.
    pub jwt: Option<&'a Map<String, Value>>,
}

/// The engines' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `Some` when denied: the rule that denied, or [`NO_POLICY`].
    pub denied: Option<Matched>,
    /// The ALLOW rule that allowed, when one did.
    pub allowed_by: Option<Matched>,
    /// The first AUDIT rule that matched.
    pub audited: Option<Matched>,
    /// What the dry-run policies would have done: `Some` when any apply,
    /// with the rule that would deny (or [`NO_POLICY`]) or `None` = allow.
    pub dry_run: Option<Option<Matched>>,
}

/// A rule that matched: its id and its policy (`ns/name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    pub id: String,
    pub policy: String,
}

impl Matched {
    fn of(rule: &PolicyRule) -> Self {
        Self {
            id: rule.id.clone(),
            policy: rule.policy.clone(),
        }
    }

    fn none() -> Self {
        Self {
            id: NO_POLICY.to_string(),
            policy: NO_POLICY.to_string(),
        }
    }
}

impl Engine {
    fn new(rules: &Rules) -> Result<Self, regex::Error> {
        let mut templates = HashMap::new();
        let all = [&rules.audit, &rules.deny, &rules.dry_run_deny]
            .into_iter()
            .chain(rules.allow.as_ref())
            .chain(rules.dry_run_allow.as_ref())
            .flatten();
        for rule in all {
            for operation in rule.rule.to.iter().flatten() {
                for path in operation.paths.iter().chain(&operation.not_paths) {
                    if let PathMatch::Template(template) = path {
                        if !templates.contains_key(template) {
                            templates.insert(template.clone(), template_regex(template)?);
                        }
                    }
                }
            }
        }
        Ok(Self {
            rules: rules.clone(),
            templates,
        })
    }

    /// Whether any policy applies to this chain.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Istio's order: a DENY match denies; no ALLOW policy allows; an ALLOW
    /// match allows; anything else is denied. AUDIT and dry-run rules are
    /// evaluated beside, never deciding.
    pub fn decide(&self, request: &Attributes<'_>) -> Decision {
        let first = |list: &[PolicyRule]| {
            list.iter()
                .find(|rule| self.rule_matches(&rule.rule, request))
                .map(Matched::of)
        };
        let audited = first(&self.rules.audit);
        let (denied, allowed_by) = match first(&self.rules.deny) {
            Some(deny) => (Some(deny), None),
            None => match &self.rules.allow {
                None => (None, None),
                Some(allow) => match first(allow) {
                    Some(allowed) => (None, Some(allowed)),
                    None => (Some(Matched::none()), None),
                },
            },
        };
        let dry_run = (!self.rules.dry_run_deny.is_empty() || self.rules.dry_run_allow.is_some())
            .then(|| {
                first(&self.rules.dry_run_deny).or_else(|| {
                    self.rules
                        .dry_run_allow
                        .as_ref()
                        .and_then(|allow| first(allow).is_none().then(Matched::none))
                })
            });
        Decision {
            denied,
            allowed_by,
            audited,
            dry_run,
        }
    }

    /// Any `from` AND any `to` AND every `when` (absent lists match all).
    fn rule_matches(&self, rule: &AuthzRule, request: &Attributes<'_>) -> bool {
        let from = rule
            .from
            .as_ref()
            .is_none_or(|sources| sources.iter().any(|s| source_matches(s, request)));
        let to = rule
            .to
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| self.operation_matches(o, request)));
        from && to && rule.when.iter().all(|c| condition_matches(c, request))
    }

    fn operation_matches(&self, operation: &Operation, request: &Attributes<'_>) -> bool {
        let port = request.local.port();
        if !matching::field(&operation.ports, &operation.not_ports, |p| *p == port) {
            return false;
        }
        let uses_http = !(operation.hosts.is_empty()
            && operation.not_hosts.is_empty()
            && operation.methods.is_empty()
            && operation.not_methods.is_empty()
            && operation.paths.is_empty()
            && operation.not_paths.is_empty());
        if !uses_http {
            return true;
        }
        // Trimmed from TCP chains at compile time; never true without HTTP.
        let Some(http) = &request.http else {
            return false;
        };
        matching::field(&operation.hosts, &operation.not_hosts, |h| {
            matching::host(h, http.authority)
        }) && matching::field(&operation.methods, &operation.not_methods, |m| {
            matching::text(m, http.method)
        }) && matching::field(&operation.paths, &operation.not_paths, |p| {
            self.path_matches(p, http.path)
        })
    }

    fn path_matches(&self, path: &PathMatch, value: &str) -> bool {
        match path {
            PathMatch::Value(form) => matching::text(form, value),
            PathMatch::Template(template) => self
                .templates
                .get(template)
                .is_some_and(|regex| regex.is_match(value)),
        }
    }
}

fn source_matches(source: &Source, request: &Attributes<'_>) -> bool {
    let peer = matching::field(&source.ip_blocks, &source.not_ip_blocks, |b| {
        matching::cidr(b, request.peer)
    });
    let remote = matching::field(
        &source.remote_ip_blocks,
        &source.not_remote_ip_blocks,
        |b| matching::cidr(b, request.remote),
    );
    if !(peer && remote) {
        return false;
    }
    if source.request_principals.is_empty() && source.not_request_principals.is_empty() {
        return true;
    }
    // Without a verified token there is no payload: a principal never
    // matches, so `notRequestPrincipals: ["*"]` does.
    let jwt = request.http.and_then(|h| h.jwt);
    matching::field(
        &source.request_principals,
        &source.not_request_principals,
        |p| jwt.is_some_and(|claims| matching::principal(claims, p)),
    )
}

fn condition_matches(condition: &Condition, request: &Attributes<'_>) -> bool {
    let jwt = request.http.and_then(|h| h.jwt);
    let claim =
        |path: &[String], form: &ValueMatch| jwt.is_some_and(|c| matching::claim(c, path, form));
    match condition {
        Condition::RequestHeader { name, values } => request.http.is_some_and(|http| {
            matching::values(values, |form| matching::header(form, http.headers, name))
        }),
        Condition::SourceIp(values) => {
            matching::values(values, |b| matching::cidr(b, request.peer))
        }
        Condition::RemoteIp(values) => {
            matching::values(values, |b| matching::cidr(b, request.remote))
        }
        Condition::DestinationIp(values) => {
            matching::values(values, |b| matching::cidr(b, request.local.ip()))
        }
        Condition::DestinationPort(values) => {
            matching::values(values, |p| *p == request.local.port())
        }
        Condition::RequestPrincipal(values) => matching::values(values, |p| {
            jwt.is_some_and(|claims| matching::principal(claims, p))
        }),
        Condition::Audiences(values) => {
            matching::values(values, |form| claim(&["aud".to_string()], form))
        }
        Condition::Presenter(values) => {
            matching::values(values, |form| claim(&["azp".to_string()], form))
        }
        Condition::Claim { path, values } => matching::values(values, |form| claim(path, form)),
        Condition::ConnectionSni(values) => matching::values(values, |form| {
            matching::text(form, request.sni.unwrap_or(""))
        }),
    }
}

/// Logs what AUDIT and dry-run rules matched (Envoy reports both as
/// filter metadata for the access log; here a line each), `what` naming
/// the request or connection.
pub fn log_shadow(decision: &Decision, what: impl Fn() -> String) {
    if let Some(audited) = &decision.audited {
        log::info!("authorization audit: {} matched {}", audited.id, what());
    }
    match &decision.dry_run {
        Some(Some(would_deny)) => log::info!(
            "authorization dry-run: {} would be denied by {}",
            what(),
            would_deny.id
        ),
        Some(None) => log::debug!("authorization dry-run: {} would be allowed", what()),
        None => {}
    }
}

/// Envoy's `uri_template` regex for an Istio path template: `{*}` is one
/// non-empty segment, `{**}` any rest, both of the characters
/// `uri_template_internal.cc` allows; the whole path must match.
fn template_regex(template: &str) -> Result<Regex, regex::Error> {
    const SEGMENT: &str = "[a-zA-Z0-9\\-._~%!$&'()+,;:@=]";
    let mut pattern = String::from("^");
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{**}") {
            pattern.push_str("[a-zA-Z0-9\\-._~%!$&'()+,;:@=/]*");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{*}") {
            pattern.push_str(&format!("{SEGMENT}+"));
            rest = after;
        } else {
            let next = rest.find('{').filter(|&i| i > 0).unwrap_or(rest.len());
            let next = if rest.starts_with('{') { 1 } else { next };
            pattern.push_str(&regex::escape(&rest[..next]));
            rest = &rest[next..];
        }
    }
    pattern.push('$');
    Regex::new(&pattern)
}
