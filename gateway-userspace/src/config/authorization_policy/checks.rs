//! Istio's checks of AuthorizationPolicy values as pure functions, each
//! returning Istio's message (istio/istio `pkg/config/security/security.go`;
//! Go's `strconv` and `net/netip` errors where Istio prints them).
use crate::model::{PathMatch, Subnet, ValueMatch};

/// The `{*}` path template operator (one segment).
const MATCH_ONE: &str = "{*}";
/// The `{**}` path template operator (the rest of the path).
const MATCH_ANY: &str = "{**}";

/// `CheckEmptyValues`: the first empty value's index, with the message.
pub(super) fn empty_value(field: &str, values: &[String]) -> Option<(usize, String)> {
    values
        .iter()
        .position(String::is_empty)
        .map(|i| (i, format!("empty value not allowed, found in {field}")))
}

/// `ValidateIPs` for one value: text with a `/` is a CIDR block (Go's
/// `netip.ParsePrefix`, split at the last `/`), anything else one address.
pub(super) fn ip_value(text: &str) -> Result<Subnet, String> {
    if text.contains('/') {
        text.parse::<Subnet>()
            .map_err(|_| format!("bad CIDR range ({text}): {}", parse_prefix_error(text)))
    } else {
        text.parse::<Subnet>()
            .map_err(|_| format!("bad IP address ({text})"))
    }
}

/// Go's `netip.ParsePrefix` error for `text` (which it refuses). The
/// reason an address part is refused is always given as Go's generic
/// `unable to parse IP`; Go names finer reasons for some of them.
fn parse_prefix_error(text: &str) -> String {
    let (addr, bits) = text.rsplit_once('/').unwrap_or((text, ""));
    let reason = match addr.parse::<std::net::IpAddr>() {
        Err(_) if addr.contains(':') && addr.contains('%') => {
            "IPv6 zones cannot be present in a prefix".to_string()
        }
        Err(_) => format!("ParseAddr({addr:?}): unable to parse IP"),
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            // Go refuses a sign or a leading zero before it reads the number.
            let plain = bits.len() <= 1 || matches!(bits.as_bytes()[0], b'1'..=b'9');
            match bits.parse::<i64>() {
                Ok(n) if plain && (n < 0 || n > max) => "prefix length out of range".to_string(),
                _ => format!("bad bits after slash: {bits:?}"),
            }
        }
    };
    format!("netip.ParsePrefix({text:?}): {reason}")
}

/// `ValidatePorts` for one value: Go's `strconv.ParseUint(v, 10, 32)`,
/// then at most 65535 (Istio prints the parse error, `<nil>` when only
/// the range is wrong).
pub(super) fn port_value(text: &str) -> Result<u16, String> {
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        match text.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "strconv.ParseUint: parsing {text:?}: value out of range"
            )),
        }
    } else {
        Err(format!(
            "strconv.ParseUint: parsing {text:?}: invalid syntax"
        ))
    };
    match parsed {
        Ok(n) => u16::try_from(n).map_err(|_| format!("bad port ({text}): <nil>")),
        Err(err) => Err(format!("bad port ({text}): {err}")),
    }
}

/// `CheckServiceAccount`.
pub(super) fn service_accounts(field: &str, values: &[String]) -> Result<(), String> {
    if values.len() > 16 {
        return Err("may not have more than 16 values".to_string());
    }
    for value in values {
        if value.is_empty() {
            return Err(format!("empty value not allowed, found in {field}"));
        }
        if value.contains('*') {
            return Err(format!("wildcard not allowed, found in {field}"));
        }
        let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount', found";
        if value.matches('/').count() > 1 {
            return Err(format!("{expected} {value:?} in {field}"));
        }
        if value.len() > 320 {
            return Err(format!(
                "value cannot exceed 320 characters, found {value:?} in {field}"
            ));
        }
        if let Some((namespace, account)) = value.split_once('/') {
            if namespace.is_empty() {
                return Err(format!("{expected} empty namespace {value:?} in {field}"));
            }
            if account.is_empty() {
                return Err(format!(
                    "{expected} empty serviceAccount {value:?} in {field}"
                ));
            }
        }
    }
    Ok(())
}

/// `CheckWildcardValues`: non-empty, at most one `*`, at an end.
pub(super) fn wildcard_values(field: &str, values: &[String]) -> Result<(), String> {
    if let Some((_, message)) = empty_value(field, values) {
        return Err(message);
    }
    for value in values {
        let stars = value.matches('*').count();
        if stars > 1 {
            return Err(format!(
                "at most one wildcard is allowed, found in {field}: {value:?}"
            ));
        }
        if stars == 1 && value != "*" && !value.starts_with('*') && !value.ends_with('*') {
            return Err(format!(
                "wildcard is only allowed at the start or end, found in {field}: {value:?}"
            ));
        }
    }
    Ok(())
}

/// `CheckTrustDomainValues`: wildcard values without `/`.
pub(super) fn trust_domains(field: &str, values: &[String]) -> Result<(), String> {
    wildcard_values(field, values)?;
    match values.iter().find(|v| v.contains('/')) {
        Some(value) => Err(format!(
            "trust domain must not contain '/', found in {field}: {value:?}"
        )),
        None => Ok(()),
    }
}

/// Whether a path is a `{*}`/`{**}` template (`ContainsPathTemplate`).
pub(super) fn is_path_template(path: &str) -> bool {
    path.contains(MATCH_ONE) || path.contains(MATCH_ANY)
}

/// `CheckValidPathTemplate` for one path (`field` is `Paths` or
/// `NotPaths`), and the match it becomes.
pub(super) fn path_value(field: &str, path: &str) -> Result<PathMatch, String> {
    let template = is_path_template(path);
    let trimmed = path.trim_matches('/');
    let invalid = |why: String| {
        Err(format!(
            "invalid or unsupported path {trimmed}, found in {field}. {why}"
        ))
    };
    let mut match_any_seen = false;
    for glob in trimmed.split('/') {
        if glob == MATCH_ONE || glob == MATCH_ANY {
            if match_any_seen {
                return invalid("{**} is not the last operator".to_string());
            }
            match_any_seen |= glob == MATCH_ANY;
            continue;
        }
        if glob.contains(['{', '}']) {
            return invalid("Contains '{' or '}' beyond a supported path template".to_string());
        }
        if template && !is_valid_literal(glob) {
            return invalid(format!(
                "Contains segment {glob} with invalid string literal"
            ));
        }
    }
    Ok(if template {
        PathMatch::Template(path.to_string())
    } else {
        PathMatch::Value(ValueMatch::parse(path))
    })
}

/// RFC 3986 `pchar`s, at least one (`validLiteral`,
/// `^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`; no `*`).
fn is_valid_literal(glob: &str) -> bool {
    !glob.is_empty()
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

/// `validateMapKey`: `a[b]` with a non-empty `a` and `b`.
pub(super) fn map_key(key: &str) -> Result<(), String> {
    let open = key.find('[');
    match open {
        Some(open) if key.ends_with(']') && open > 0 && open + 2 < key.len() => Ok(()),
        _ => Err(format!("bad key ({key}): should have format a[b]")),
    }
}

/// `extractNameInBrackets`: the header name of `[name]`, with the error
/// Istio's generator gives (which makes it skip the rule).
pub(super) fn name_in_brackets(text: &str) -> Result<String, String> {
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(name) => Ok(name.to_string()),
        None => Err(format!("expecting format [<NAME>], but found {text}")),
    }
}

/// `extractNameInNestedBrackets`: `[a][b]` is the claim path `a`, `b`;
/// text that is not a run of bracketed names but starts with `[` and ends
/// with `]` is one literal name (`[a[b]]` is `a[b]`).
pub(super) fn names_in_nested_brackets(text: &str) -> Result<Vec<String>, String> {
    let bytes = text.as_bytes();
    let end_bracket = |begin: usize| -> Option<usize> {
        if bytes.get(begin) != Some(&b'[') {
            return None;
        }
        for (i, b) in bytes.iter().enumerate().skip(begin + 1) {
            match b {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut names = Vec::new();
    let mut begin = 0;
    while begin < bytes.len() {
        let Some(end) = end_bracket(begin) else {
            return name_in_brackets(text).map(|name| vec![name]);
        };
        names.push(text[begin + 1..end].to_string());
        begin = end + 1;
    }
    Ok(names)
}

/// Go's `strconv.ParseBool` (the `istio.io/dry-run` annotation), with
/// its error.
pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {text:?}: invalid syntax"
        )),
    }
}
