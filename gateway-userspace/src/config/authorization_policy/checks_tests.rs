//! Istio's value checks of AuthorizationPolicy (`security.go`), one test
//! per rule, with Istio's own test cases where it has them
//! (`security_test.go`).
use super::checks::*;
use crate::model::{PathMatch, ValueMatch};

fn owned(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[test]
fn empty_values_are_refused_naming_the_go_field() {
    assert_eq!(
        empty_value("Methods", &owned(&["GET", "", "POST"])),
        Some((1, "empty value not allowed, found in Methods".to_string()))
    );
    assert_eq!(empty_value("Methods", &owned(&["GET"])), None);
}

#[test]
fn ip_values_are_addresses_or_cidr_blocks_as_go_netip_reads_them() {
    assert_eq!(ip_value("192.0.2.1").map(|s| s.prefix), Ok(32));
    assert_eq!(ip_value("2001:db8::/32").map(|s| s.prefix), Ok(32));
    assert_eq!(
        ip_value("example.com"),
        Err("bad IP address (example.com)".to_string())
    );
    assert_eq!(ip_value(""), Err("bad IP address ()".to_string()));
    assert_eq!(
        ip_value("10.0.0.0/33"),
        Err(
            "bad CIDR range (10.0.0.0/33): netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range"
                .to_string()
        )
    );
    assert_eq!(
        ip_value("10.0.0.0/08"),
        Err(
            "bad CIDR range (10.0.0.0/08): netip.ParsePrefix(\"10.0.0.0/08\"): bad bits after slash: \"08\""
                .to_string()
        )
    );
    // Go splits at the last `/`: two of them make a bad address part.
    assert_eq!(
        ip_value("10.0.0.0/8/8"),
        Err(
            "bad CIDR range (10.0.0.0/8/8): netip.ParsePrefix(\"10.0.0.0/8/8\"): ParseAddr(\"10.0.0.0/8\"): unable to parse IP"
                .to_string()
        )
    );
}

#[test]
fn ports_parse_as_go_parse_uint_then_at_most_65535() {
    assert_eq!(port_value("8080"), Ok(8080));
    assert_eq!(port_value("0"), Ok(0));
    assert_eq!(
        port_value("65536"),
        Err("bad port (65536): <nil>".to_string())
    );
    assert_eq!(
        port_value("http"),
        Err("bad port (http): strconv.ParseUint: parsing \"http\": invalid syntax".to_string())
    );
    assert_eq!(
        port_value("+80"),
        Err("bad port (+80): strconv.ParseUint: parsing \"+80\": invalid syntax".to_string())
    );
    assert_eq!(
        port_value("99999999999"),
        Err(
            "bad port (99999999999): strconv.ParseUint: parsing \"99999999999\": value out of range"
                .to_string()
        )
    );
}

#[test]
fn service_accounts_follow_check_service_account() {
    let field = "ServiceAccounts";
    assert_eq!(service_accounts(field, &owned(&["sa", "ns/sa"])), Ok(()));
    let too_many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
    assert_eq!(
        service_accounts(field, &too_many),
        Err("may not have more than 16 values".into())
    );
    assert_eq!(
        service_accounts(field, &owned(&["ns/*"])),
        Err("wildcard not allowed, found in ServiceAccounts".into())
    );
    assert_eq!(
        service_accounts(field, &owned(&["a/b/c"])),
        Err("expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\" in ServiceAccounts".into())
    );
    assert_eq!(
        service_accounts(field, &owned(&["/sa"])),
        Err("expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace \"/sa\" in ServiceAccounts".into())
    );
    assert_eq!(
        service_accounts(field, &owned(&["ns/"])),
        Err("expected format 'serviceAccount' or 'namespace/serviceAccount', found empty serviceAccount \"ns/\" in ServiceAccounts".into())
    );
    let long = "a".repeat(321);
    assert_eq!(
        service_accounts(field, std::slice::from_ref(&long)),
        Err(format!(
            "value cannot exceed 320 characters, found {long:?} in ServiceAccounts"
        ))
    );
    assert_eq!(
        service_accounts(field, &owned(&[""])),
        Err("empty value not allowed, found in ServiceAccounts".into())
    );
}

#[test]
fn trust_domains_allow_one_wildcard_at_an_end_and_no_slash() {
    let field = "TrustDomains";
    assert_eq!(
        trust_domains(field, &owned(&["*", "*.local", "cluster.*"])),
        Ok(())
    );
    assert_eq!(
        trust_domains(field, &owned(&["*a*"])),
        Err("at most one wildcard is allowed, found in TrustDomains: \"*a*\"".into())
    );
    assert_eq!(
        trust_domains(field, &owned(&["a*b"])),
        Err("wildcard is only allowed at the start or end, found in TrustDomains: \"a*b\"".into())
    );
    assert_eq!(
        trust_domains(field, &owned(&["a/b"])),
        Err("trust domain must not contain '/', found in TrustDomains: \"a/b\"".into())
    );
}

#[test]
fn path_templates_accepted_as_istio_accepts_them() {
    for path in ["/{*}/foo", "/{*}/foo/", "/foo/{**}/bar", "/foo/bar/{**}"] {
        assert_eq!(
            path_value("Paths", path),
            Ok(PathMatch::Template(path.to_string())),
            "{path}"
        );
    }
    // Not a template: Istio's string forms.
    assert_eq!(
        path_value("Paths", "/api/*"),
        Ok(PathMatch::Value(ValueMatch::Prefix("/api/".into())))
    );
}

#[test]
fn path_templates_rejected_as_istio_rejects_them() {
    for path in [
        "/foo/{**}buzz/bar",
        "/{*}/foo/{}/bar",
        "/foo/{*}/bar/*",
        "/foo/{*}/bar/**/buzz",
        "/foo/{buzz}/bar",
        "/{buzz}",
        "/foo/{buzz}/bar/{**}",
        "/foo/{buzz=*}/bar/{**}",
        "/{*}/foo/{buzz=**}/bar",
        "/{*}/foo/{**}bar",
        "/{*}/foo/{*}.txt",
        "/{*}/foo/{temp",
        "/{*}/foo/temp}/bar",
        "/{*}/foo/temp}/*",
        "/{**}/foo/temp/{*}/bar",
        "/{**}/{**}",
        "/{**}/foo/temp/{**}/bar",
        "/{*}/foo/?abc",
    ] {
        assert!(path_value("Paths", path).is_err(), "{path}");
    }
}

#[test]
fn path_template_messages_name_the_trimmed_path_and_the_field() {
    assert_eq!(
        path_value("NotPaths", "/{**}/{*}/"),
        Err("invalid or unsupported path {**}/{*}, found in NotPaths. {**} is not the last operator".into())
    );
    assert_eq!(
        path_value("Paths", "/a{b"),
        Err("invalid or unsupported path a{b, found in Paths. Contains '{' or '}' beyond a supported path template".into())
    );
    assert_eq!(
        path_value("Paths", "/{*}/?abc"),
        Err("invalid or unsupported path {*}/?abc, found in Paths. Contains segment ?abc with invalid string literal".into())
    );
}

#[test]
fn map_keys_need_a_name_and_a_bracketed_part() {
    assert_eq!(map_key("request.headers[x-user]"), Ok(()));
    assert_eq!(map_key("request.auth.claims[a][b]"), Ok(()));
    for key in [
        "request.headers",
        "request.headers[]",
        "[a]",
        "request.headers[a",
    ] {
        assert_eq!(
            map_key(key),
            Err(format!("bad key ({key}): should have format a[b]")),
            "{key}"
        );
    }
}

#[test]
fn claim_names_are_read_as_extract_name_in_nested_brackets_reads_them() {
    let names = |text: &str| names_in_nested_brackets(text);
    assert_eq!(names("[iss]"), Ok(vec!["iss".to_string()]));
    assert_eq!(names("[a][b][c]"), Ok(owned(&["a", "b", "c"])));
    // Malformed nesting: one literal name, brackets kept.
    assert_eq!(names("[a[b]]"), Ok(owned(&["a[b]"])));
    assert_eq!(names("[a]x[b]"), Ok(owned(&["a]x[b"])));
    assert_eq!(
        names("[a]b"),
        Err("expecting format [<NAME>], but found [a]b".to_string())
    );
    assert_eq!(
        names("x[a]"),
        Err("expecting format [<NAME>], but found x[a]".to_string())
    );
}

#[test]
fn dry_run_values_are_go_parse_bool() {
    for text in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(parse_bool(text), Ok(true), "{text}");
    }
    for text in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(parse_bool(text), Ok(false), "{text}");
    }
    assert_eq!(
        parse_bool("yes"),
        Err("strconv.ParseBool: parsing \"yes\": invalid syntax".to_string())
    );
    assert!(parse_bool("tRUE").is_err());
}
