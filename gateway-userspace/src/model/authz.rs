//! `security.istio.io` AuthorizationPolicy as decoded: who may reach what.
//! Matching semantics (what each field compares, and how) are Istio's
//! translation to Envoy RBAC (`pilot/pkg/security/authz/model`); the facts
//! are in docs/security-policy.md.
use std::collections::BTreeMap;

use super::Subnet;

/// An AuthorizationPolicy that passed decoding and Istio's validation.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorizationPolicy {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp`: Istio evaluates policies of one action
    /// in creation order, which decides the policy a denial names.
    pub creation_timestamp: Option<String>,
    pub target: PolicyTarget,
    pub action: AuthzAction,
    /// `istio.io/dry-run: "true"`: evaluated and logged, never enforced.
    pub dry_run: bool,
    /// `None` when `rules` is absent: an ALLOW policy then allows nothing
    /// (and still makes the workload deny by default).
    pub rules: Option<Vec<AuthzRule>>,
    /// `file:line` of its document; `None` when built in code.
    pub defined_at: Option<String>,
}

impl AuthorizationPolicy {
    /// Envoy's RBAC policy name for rule `index`, as Istio builds it
    /// (`ns[<ns>]-policy[<name>]-rule[<i>]`): what a denial reports.
    pub fn rule_id(&self, index: usize) -> String {
        format!("ns[{}]-policy[{}]-rule[{index}]", self.namespace, self.name)
    }
}

/// Which workloads a security policy (AuthorizationPolicy,
/// RequestAuthentication) applies to (`ShouldAttachPolicy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyTarget {
    /// No `selector`: every workload of the policy's namespace, or of the
    /// mesh when that is the root namespace.
    Namespace,
    /// `selector.matchLabels`: workloads with these labels (an empty map
    /// selects all) in the policy's namespace, or in any namespace when the
    /// policy is in the root namespace.
    Selector(BTreeMap<String, String>),
    /// `targetRef`/`targetRefs`: Istio attaches these only to Gateway-API
    /// gateways and waypoints, never to a workload serving
    /// `networking.istio.io` Gateways: ignored here, as there.
    TargetRefs,
}

impl PolicyTarget {
    /// Whether a policy in `policy_namespace` applies to the gateway
    /// workload `labels` in `workload_namespace`, with Istio's
    /// `rootNamespace`.
    pub fn applies_to(
        &self,
        policy_namespace: &str,
        labels: &BTreeMap<String, String>,
        workload_namespace: &str,
        root_namespace: &str,
    ) -> bool {
        let namespace_in_scope =
            policy_namespace == root_namespace || policy_namespace == workload_namespace;
        match self {
            Self::TargetRefs => false,
            Self::Namespace => namespace_in_scope,
            Self::Selector(selector) => {
                namespace_in_scope && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            }
        }
    }
}

/// Istio's default `meshConfig.rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// `action`. CUSTOM (external authorization) is refused when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Matches are logged; never changes the decision.
    Audit,
}

/// One entry of `rules`: any `from` AND any `to` AND every `when`.
/// An absent `from` or `to` matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthzRule {
    pub from: Option<Vec<Source>>,
    pub to: Option<Vec<Operation>>,
    pub when: Vec<Condition>,
}

/// `from[].source`: its fields are ANDed, the values of one field ORed;
/// a `not*` field matches when none of its values does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source {
    /// The connection's peer (Envoy `direct_remote_ip`).
    pub ip_blocks: Vec<Subnet>,
    pub not_ip_blocks: Vec<Subnet>,
    /// The original client: the peer, or the address `--trusted-proxies`
    /// hops of `X-Forwarded-For` name (Envoy `remote_ip`).
    pub remote_ip_blocks: Vec<Subnet>,
    pub not_remote_ip_blocks: Vec<Subnet>,
    /// The validated JWT's `iss/sub` (RequestAuthentication).
    pub request_principals: Vec<RequestPrincipal>,
    pub not_request_principals: Vec<RequestPrincipal>,
}

/// `to[].operation`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Operation {
    /// `:authority`, case-insensitive, port included (Istio strips none).
    pub hosts: Vec<ValueMatch>,
    pub not_hosts: Vec<ValueMatch>,
    /// The port the client connected to (the listener's).
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    pub methods: Vec<ValueMatch>,
    pub not_methods: Vec<ValueMatch>,
    /// The path without query or fragment, after normalisation.
    pub paths: Vec<PathMatch>,
    pub not_paths: Vec<PathMatch>,
}

/// A `when` condition: the key's value must match one of `values` and none
/// of `not_values` (either may be empty, not both).
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `request.headers[<name>]`: `*` matches a present empty header.
    RequestHeader {
        name: String,
        values: Values<ValueMatch>,
    },
    /// `source.ip`: as `ipBlocks`.
    SourceIp(Values<Subnet>),
    /// `remote.ip`: as `remoteIpBlocks`.
    RemoteIp(Values<Subnet>),
    /// `destination.ip`: the address the client connected to.
    DestinationIp(Values<Subnet>),
    /// `destination.port`: as `ports`.
    DestinationPort(Values<u16>),
    /// `request.auth.principal`: as `requestPrincipals`.
    RequestPrincipal(Values<RequestPrincipal>),
    /// `request.auth.audiences`: the token's `aud` (a string or a list).
    Audiences(Values<ValueMatch>),
    /// `request.auth.presenter`: the token's `azp`.
    Presenter(Values<ValueMatch>),
    /// `request.auth.claims[a][b]...`: the claim at that path (a string or
    /// a list of strings).
    Claim {
        path: Vec<String>,
        values: Values<ValueMatch>,
    },
    /// `connection.sni`: the TLS server name (empty on plaintext).
    ConnectionSni(Values<ValueMatch>),
}

/// `values` and `notValues` of one condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Values<T> {
    pub values: Vec<T>,
    pub not_values: Vec<T>,
}

/// Istio's string forms (`matcher.StringMatcherWithPrefix`): `*` alone,
/// `*suffix`, `prefix*`, exact. Checked in that order, so `*` alone is
/// presence and `*a*` is a suffix match of `a*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// `*`: a non-empty value (a present header for header fields).
    Presence,
    Suffix(String),
    Prefix(String),
    Exact(String),
}

impl ValueMatch {
    /// The form of `text` as Istio reads it.
    pub fn parse(text: &str) -> Self {
        if text == "*" {
            Self::Presence
        } else if let Some(rest) = text.strip_prefix('*') {
            Self::Suffix(rest.to_string())
        } else if let Some(rest) = text.strip_suffix('*') {
            Self::Prefix(rest.to_string())
        } else {
            Self::Exact(text.to_string())
        }
    }
}

/// A `paths` entry: a string form, or a `{*}`/`{**}` template that Envoy's
/// `uri_template` matcher compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Value(ValueMatch),
    /// The path as written, e.g. `/api/{*}/items/{**}`; validated.
    Template(String),
}

/// A `requestPrincipals` value: the text split at its last `/` into the
/// issuer's form and the subject's (`requestPrincipalGenerator`); without
/// a `/`, `*x` is (any issuer, subject suffix `x`) and `x*` is (issuer
/// prefix `x`, any subject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPrincipal {
    pub issuer: ValueMatch,
    pub subject: ValueMatch,
}

impl RequestPrincipal {
    /// The (issuer, subject) forms of a `requestPrincipals` value, exactly
    /// as `requestPrincipalGenerator.extendedPrincipal` builds them: the
    /// form is decided on the whole value, so in `*iss/sub*` the subject is
    /// the exact text `sub*`, and in `*/*` the exact text `*`.
    pub fn parse(text: &str) -> Self {
        let split = text.rsplit_once('/');
        let (issuer, subject) = split.unwrap_or((text, ""));
        let exact = |s: &str| ValueMatch::Exact(s.to_string());
        let (issuer, subject) = if text == "*" {
            (ValueMatch::Presence, ValueMatch::Presence)
        } else if let Some(rest) = text.strip_prefix('*') {
            match split {
                Some(_) if issuer == "*" => (ValueMatch::Presence, exact(subject)),
                Some(_) => (ValueMatch::Suffix(issuer[1..].to_string()), exact(subject)),
                None => (ValueMatch::Presence, ValueMatch::Suffix(rest.to_string())),
            }
        } else if let Some(rest) = text.strip_suffix('*') {
            match split {
                Some(_) if subject == "*" => (exact(issuer), ValueMatch::Presence),
                Some(_) => (
                    exact(issuer),
                    ValueMatch::Prefix(subject[..subject.len() - 1].to_string()),
                ),
                None => (ValueMatch::Prefix(rest.to_string()), ValueMatch::Presence),
            }
        } else {
            // Without a `/` the subject is the empty string, which no
            // token's non-empty `sub` equals.
            (exact(issuer), exact(subject))
        };
        Self { issuer, subject }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_forms_are_checked_presence_then_suffix_then_prefix() {
        assert_eq!(ValueMatch::parse("*"), ValueMatch::Presence);
        assert_eq!(
            ValueMatch::parse("*.com"),
            ValueMatch::Suffix(".com".into())
        );
        assert_eq!(
            ValueMatch::parse("/api*"),
            ValueMatch::Prefix("/api".into())
        );
        assert_eq!(ValueMatch::parse("*a*"), ValueMatch::Suffix("a*".into()));
        assert_eq!(ValueMatch::parse("GET"), ValueMatch::Exact("GET".into()));
    }

    #[test]
    fn request_principals_split_at_the_last_slash() {
        let p = RequestPrincipal::parse("https://issuer.example/a/sub*");
        assert_eq!(
            p.issuer,
            ValueMatch::Exact("https://issuer.example/a".into())
        );
        assert_eq!(p.subject, ValueMatch::Prefix("sub".into()));
        let any = RequestPrincipal::parse("*");
        assert_eq!(
            (any.issuer, any.subject),
            (ValueMatch::Presence, ValueMatch::Presence)
        );
        let suffix = RequestPrincipal::parse("*x");
        assert_eq!(suffix.issuer, ValueMatch::Presence);
        assert_eq!(suffix.subject, ValueMatch::Suffix("x".into()));
        let prefix = RequestPrincipal::parse("x*");
        assert_eq!(prefix.issuer, ValueMatch::Prefix("x".into()));
        assert_eq!(prefix.subject, ValueMatch::Presence);
        let mixed = RequestPrincipal::parse("*iss/sub*");
        assert_eq!(mixed.issuer, ValueMatch::Suffix("iss".into()));
        assert_eq!(mixed.subject, ValueMatch::Exact("sub*".into()));
        let both = RequestPrincipal::parse("*/*");
        assert_eq!(both.issuer, ValueMatch::Presence);
        assert_eq!(both.subject, ValueMatch::Exact("*".into()));
        let bare = RequestPrincipal::parse("issuer");
        assert_eq!(bare.subject, ValueMatch::Exact(String::new()));
    }

    #[test]
    fn target_refs_never_attach_to_a_classic_gateway() {
        let gw = labels(&[("istio", "ingressgateway")]);
        assert!(!PolicyTarget::TargetRefs.applies_to(
            "istio-system",
            &gw,
            "istio-system",
            "istio-system"
        ));
    }

    #[test]
    fn a_policy_without_selector_covers_its_namespace_and_the_root_covers_all() {
        let gw = labels(&[("istio", "ingressgateway")]);
        let t = PolicyTarget::Namespace;
        assert!(t.applies_to("gw-ns", &gw, "gw-ns", "istio-system"));
        assert!(t.applies_to("istio-system", &gw, "gw-ns", "istio-system"));
        assert!(!t.applies_to("other", &gw, "gw-ns", "istio-system"));
    }

    #[test]
    fn a_selector_must_be_a_subset_of_the_workload_labels() {
        let gw = labels(&[("istio", "ingressgateway"), ("app", "edge")]);
        let hit = PolicyTarget::Selector(labels(&[("istio", "ingressgateway")]));
        let miss = PolicyTarget::Selector(labels(&[("istio", "egressgateway")]));
        let all = PolicyTarget::Selector(BTreeMap::new());
        assert!(hit.applies_to("gw-ns", &gw, "gw-ns", "istio-system"));
        assert!(hit.applies_to("istio-system", &gw, "gw-ns", "istio-system"));
        assert!(!hit.applies_to("other", &gw, "gw-ns", "istio-system"));
        assert!(!miss.applies_to("gw-ns", &gw, "gw-ns", "istio-system"));
        assert!(all.applies_to("gw-ns", &gw, "gw-ns", "istio-system"));
    }
}
