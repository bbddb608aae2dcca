//! `http[].mirror` with `mirrorPercentage` (or the deprecated
//! `mirrorPercent`), and `mirrors`: checked as Istio's validation checks
//! them (`validation/virtualservice.go`, `validateHTTPMirrors`) and
//! translated as `route.go::MirrorPercent`/`MirrorPercentByPolicy` do: no
//! share means all requests, an explicit 0 means none.
use crate::{
    config::{
        common::destination,
        decode::{Decoder, field, join},
        diagnostic::Severity,
        yaml::{Node, Value},
    },
    model::{Destination, HttpMirror, PerMillion},
};

/// The rule's mirrors.
pub(super) fn decode_mirrors(
    d: &mut Decoder<'_>,
    node: &Node,
    entries: &[(Node, Node)],
    path: &str,
) -> Vec<HttpMirror> {
    let mirror = field(entries, "mirror").filter(|n| n.value != Value::Null);
    let mirrors = field(entries, "mirrors").filter(|n| n.value != Value::Null);
    if mirror.is_some() && mirrors.is_some() {
        d.error(
            node,
            path,
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
    let mut out = Vec::new();
    if let Some(at) = mirror {
        let share = single_share(d, entries, path);
        if let Some(dest) = to(d, at, &join(path, "mirror")) {
            out.extend(share.filter(|s| s.0 > 0).map(|share| HttpMirror {
                destination: dest,
                share,
            }));
        }
    } else {
        // The share fields are checked even without a mirror, as Istio does.
        single_share(d, entries, path);
    }
    for (item_path, item) in d.items(entries, "mirrors", path) {
        let Some(policy) = d.mapping(item, &item_path, &["destination", "percentage"]) else {
            continue;
        };
        let share = match field(policy, "percentage") {
            Some(at) => percentage(d, at, &join(&item_path, "percentage"), "mirror percentage"),
            None => Some(PerMillion::ALL),
        };
        let Some(dest_node) = field(policy, "destination") else {
            d.error(item, &item_path, "destination is required for mirrors");
            continue;
        };
        let Some(dest) = to(d, dest_node, &join(&item_path, "destination")) else {
            continue;
        };
        out.extend(share.filter(|s| s.0 > 0).map(|share| HttpMirror {
            destination: dest,
            share,
        }));
    }
    out
}

/// The share of `mirror`: `mirrorPercentage`, else the deprecated
/// `mirrorPercent` (or its other spelling `mirror_percent`), else all.
fn single_share(d: &mut Decoder<'_>, entries: &[(Node, Node)], path: &str) -> Option<PerMillion> {
    if let Some(at) = field(entries, "mirrorPercentage") {
        return percentage(d, at, &join(path, "mirrorPercentage"), "mirror_percentage");
    }
    let deprecated = ["mirrorPercent", "mirror_percent"]
        .into_iter()
        .find_map(|name| field(entries, name).map(|at| (name, at)));
    if let Some((name, at)) = deprecated {
        let at_path = join(path, name);
        d.report(
            Severity::Warning,
            at,
            &at_path,
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead".into(),
        );
        let value = d.integer(at, &at_path)?;
        if value > 100 {
            d.error(
                at,
                &at_path,
                format!("mirror_percent must have a max value of 100 (it has {value})"),
            );
            return None;
        }
        return Some(PerMillion(
            u32::try_from(value).unwrap_or(0).saturating_mul(10_000),
        ));
    }
    Some(PerMillion::ALL)
}

/// A `Percent` `{value}` between 0 and 100, in millionths.
fn percentage(d: &mut Decoder<'_>, node: &Node, path: &str, what: &str) -> Option<PerMillion> {
    let Some((at, value_path, value)) = super::percent_value(d, node, path)? else {
        return Some(PerMillion(0));
    };
    if value > 100.0 {
        d.error(
            at,
            &value_path,
            format!("{what} must have a max value of 100 (it has {value:.6})"),
        );
        return None;
    }
    if value < 0.0 {
        d.error(
            at,
            &value_path,
            format!("{what} must have a min value of 0 (it has {value:.6})"),
        );
        return None;
    }
    // Truncated as Istio's `uint32(p.Value * 10000)`.
    Some(PerMillion((value * 10_000.0) as u32))
}

fn to(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Destination> {
    let (host, subset, port) = destination(d, node, path)?;
    Some(Destination {
        host,
        subset,
        port,
        weight: 100,
        headers: Default::default(),
    })
}
