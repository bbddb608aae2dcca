//! `http[].corsPolicy` as Istio's `TranslateCORSPolicy` hands it to
//! Envoy's CORS filter, validated.
use super::StringMatch;

/// One rule's CORS policy. The lists are kept joined with `,`, the form
/// Envoy's filter sends them in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `allowOrigins`, or the deprecated `allowOrigin` as exact matches
    /// when `allowOrigins` is absent. An entry matching the text `*`
    /// (exact `*`, regex `.*`) allows every origin.
    pub allow_origins: Vec<StringMatch>,
    /// `allowMethods` joined; `*` echoes the preflight's requested method.
    pub allow_methods: String,
    /// `allowHeaders` joined; `*` echoes the preflight's requested headers.
    pub allow_headers: String,
    /// `exposeHeaders` joined.
    pub expose_headers: String,
    /// `maxAge` in whole seconds.
    pub max_age_secs: Option<u64>,
    /// `allowCredentials: true`.
    pub allow_credentials: bool,
    /// `unmatchedPreflights`: FORWARD (and unset) true, IGNORE false.
    pub forward_unmatched_preflights: bool,
}
