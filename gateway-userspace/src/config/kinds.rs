//! What the gateway does with each kind of resource it finds: the four
//! routing kinds, AuthorizationPolicy and RequestAuthentication are served; kinds whose absence
//! would let through traffic Istio denies are refused until they are enforced (an error, unless the
//! operator accepts the risk with `--ignore-kind`); every other kind is a
//! warning, so `check --strict` fails on configuration it does not read.
use std::fmt;

/// A kind served: (API group, kind). Versions are in [`SERVED_VERSIONS`]
/// and, for `security.istio.io`, [`SECURITY_VERSIONS`].
pub(super) const SERVED: &[(&str, &str)] = &[
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
];

/// Versions of `networking.istio.io` read alike (the CRDs serve one schema
/// under all three).
pub(super) const SERVED_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// Versions of `security.istio.io` the CRDs serve (one schema).
pub(super) const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The versions served of `group`.
fn served_versions(group: &str) -> &'static [&'static str] {
    if group == "security.istio.io" {
        SECURITY_VERSIONS
    } else {
        SERVED_VERSIONS
    }
}

/// A kind that controls who may reach what, which this gateway does not
/// enforce yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub group: &'static str,
    pub kind: &'static str,
    /// What it would have enforced, for the message.
    pub enforces: &'static str,
}

/// Refused kinds, any version of their group. The extension kinds are here
/// for the reason `EnvoyFilter` is: each puts filters in the request path,
/// and the examples in their own API documentation are authentication
/// filters on an ingress gateway.
pub const REFUSED: &[Refused] = &[
    Refused {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        enforces: "mutual TLS required of clients",
    },
    Refused {
        group: "networking.istio.io",
        kind: "EnvoyFilter",
        enforces: "proxy filters (RBAC, external authorization, rate limits, ...)",
    },
    Refused {
        group: "networking.istio.io",
        kind: "Sidecar",
        enforces: "which destinations workloads may reach",
    },
    Refused {
        group: "extensions.istio.io",
        kind: "WasmPlugin",
        enforces: "Wasm filters in the request path (authentication, ...)",
    },
    Refused {
        group: "extensions.istio.io",
        kind: "TrafficExtension",
        enforces: "Wasm or Lua filters in the request path (authentication, ...)",
    },
];

/// What the gateway does with one document's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Decoded and served.
    Served,
    /// A served security kind in a version its CRD does not serve: an
    /// error, as skipping it would let through what it denies.
    UnservedVersion(&'static [&'static str]),
    /// Not enforced: an error unless ignored on request.
    Refused(&'static Refused),
    /// A list (`kind: List`, `kind: GatewayList`, ...): its items are read.
    List,
    /// Not read: a warning.
    Warned,
}

/// How `apiVersion` and `kind` are treated.
pub(super) fn disposition(api_version: &str, kind: &str) -> Disposition {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if SERVED.contains(&(group, kind)) {
        let versions = served_versions(group);
        if versions.contains(&version) {
            return Disposition::Served;
        }
        if group == "security.istio.io" {
            return Disposition::UnservedVersion(versions);
        }
    }
    if let Some(refused) = REFUSED.iter().find(|r| r.group == group && r.kind == kind) {
        return Disposition::Refused(refused);
    }
    // `kubectl get -o yaml` prints `v1` `List`; the API server itself
    // answers a list request with `<Kind>List`.
    if kind == "List" || (kind.len() > 4 && kind.ends_with("List")) {
        return Disposition::List;
    }
    Disposition::Warned
}

/// A kind named by `--ignore-kind`: one of [`REFUSED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredKind(&'static str);

impl IgnoredKind {
    /// The kind's name.
    pub fn name(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for IgnoredKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::str::FromStr for IgnoredKind {
    type Err = String;

    /// Only a refused kind may be ignored; anything else is an error naming
    /// them (a security kind now served, saying it needs no ignoring).
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some((group, kind)) = SERVED
            .iter()
            .find(|(group, kind)| *group == "security.istio.io" && *kind == text)
        {
            return Err(format!(
                "{kind} ({group}) is enforced by this gateway: it needs no --ignore-kind"
            ));
        }
        REFUSED
            .iter()
            .find(|r| r.kind == text)
            .map(|r| Self(r.kind))
            .ok_or_else(|| {
                let names: Vec<&str> = REFUSED.iter().map(|r| r.kind).collect();
                format!(
                    "{text:?} is not a kind the gateway refuses; those are {}",
                    names.join(", ")
                )
            })
    }
}

/// The message for a refused kind (`ignored`: the operator accepted it).
pub(super) fn refused_message(refused: &Refused, api_version: &str, ignored: bool) -> String {
    let kind = refused.kind;
    if ignored {
        format!(
            "{kind} ({api_version}) is not enforced by this gateway ({}): ignored as --ignore-kind {kind} asks, so what it would deny is served",
            refused.enforces
        )
    } else {
        format!(
            "{kind} ({api_version}) is not enforced by this gateway ({}): serving without it would let through what it denies, so the configuration is refused; --ignore-kind {kind} accepts that risk",
            refused.enforces
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_kinds_are_served_in_every_networking_version() {
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let api = format!("networking.istio.io/{version}");
            assert_eq!(disposition(&api, "Gateway"), Disposition::Served);
            assert_eq!(disposition(&api, "ServiceEntry"), Disposition::Served);
        }
        assert_eq!(
            disposition("networking.istio.io/v2", "Gateway"),
            Disposition::Warned
        );
        assert_eq!(
            disposition("gateway.networking.k8s.io/v1", "Gateway"),
            Disposition::Warned
        );
    }

    #[test]
    fn authorization_policy_is_served_in_v1_and_v1beta1_only() {
        for version in ["v1", "v1beta1"] {
            let api = format!("security.istio.io/{version}");
            assert_eq!(
                disposition(&api, "AuthorizationPolicy"),
                Disposition::Served
            );
        }
        // Skipping it would let through what it denies: an error.
        assert_eq!(
            disposition("security.istio.io/v1alpha1", "AuthorizationPolicy"),
            Disposition::UnservedVersion(SECURITY_VERSIONS)
        );
        // The routing kinds are not served under the security versions'
        // rule, nor the other way round.
        assert_eq!(
            disposition("networking.istio.io/v1alpha3", "AuthorizationPolicy"),
            Disposition::Warned
        );
    }

    #[test]
    fn security_kinds_are_refused_in_any_version_of_their_group() {
        for (api, kind) in [
            ("security.istio.io/v1", "PeerAuthentication"),
            ("networking.istio.io/v1alpha3", "EnvoyFilter"),
            ("networking.istio.io/v1", "Sidecar"),
            ("extensions.istio.io/v1alpha1", "WasmPlugin"),
            ("extensions.istio.io/v1alpha1", "TrafficExtension"),
        ] {
            assert!(
                matches!(disposition(api, kind), Disposition::Refused(_)),
                "{api} {kind}"
            );
        }
        // The same name in another group is someone else's kind.
        assert_eq!(
            disposition("example.com/v1", "AuthorizationPolicy"),
            Disposition::Warned
        );
    }

    #[test]
    fn lists_are_recognised() {
        assert_eq!(disposition("v1", "List"), Disposition::List);
        assert_eq!(
            disposition("networking.istio.io/v1", "GatewayList"),
            Disposition::List
        );
        assert_eq!(disposition("v1", "ConfigMap"), Disposition::Warned);
    }

    #[test]
    fn only_refused_kinds_may_be_ignored() {
        assert_eq!(
            "PeerAuthentication"
                .parse::<IgnoredKind>()
                .map(|k| k.name()),
            Ok("PeerAuthentication")
        );
        let err = "ConfigMap".parse::<IgnoredKind>().unwrap_err();
        assert!(err.starts_with("\"ConfigMap\" is not a kind"), "{err}");
        assert!(
            err.contains("those are PeerAuthentication, EnvoyFilter"),
            "{err}"
        );
        assert!("peerauthentication".parse::<IgnoredKind>().is_err());
    }

    #[test]
    fn ignoring_an_enforced_security_kind_is_an_error_saying_it_is_enforced() {
        assert_eq!(
            "AuthorizationPolicy".parse::<IgnoredKind>(),
            Err(
                "AuthorizationPolicy (security.istio.io) is enforced by this gateway: it needs no --ignore-kind"
                    .to_string()
            )
        );
    }
}
