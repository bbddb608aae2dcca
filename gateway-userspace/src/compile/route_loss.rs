//! What a reload would take away: a listener that is still declared but
//! would answer nothing it answered before. A configuration file caught
//! half written (a stalled copy cut at a document boundary) parses
//! cleanly and looks exactly like this, so a reload seen in the files is
//! refused when it does it; an explicit `gateway reload` applies it.
use std::{collections::BTreeMap, net::IpAddr};

use crate::plan::{HostTable, Plan, TlsServerKind};

/// The listeners (`bind:port`) that serve something in `previous` and
/// nothing in `next`, while `next` still has them.
pub fn listeners_losing_every_route(previous: &Plan, next: &Plan) -> Vec<String> {
    let before = answers(previous);
    let after = answers(next);
    after
        .iter()
        .filter(|(listener, count)| **count == 0 && before.get(*listener).is_some_and(|n| *n > 0))
        .map(|((bind, port), _)| {
            let bind = bind.map_or_else(|| "*".to_string(), |ip| ip.to_string());
            format!("{bind}:{port}")
        })
        .collect()
}

/// How many things each listener answers: virtual hosts with a route or a
/// redirect, TLS servers with somewhere to send a connection, TCP routes.
fn answers(plan: &Plan) -> BTreeMap<(Option<IpAddr>, u16), usize> {
    let mut out = BTreeMap::new();
    for listener in &plan.http {
        out.insert(
            (listener.bind, listener.port),
            hosts_answering(&listener.hosts),
        );
    }
    for listener in &plan.tls {
        let servers: usize = listener
            .servers
            .iter()
            .map(|server| match &server.kind {
                TlsServerKind::TerminateHttp { hosts, .. } => hosts_answering(hosts),
                TlsServerKind::TerminateTcp { route, .. } => usize::from(route.is_some()),
                TlsServerKind::Passthrough { routes } => routes.len(),
                TlsServerKind::AutoPassthrough { clusters } => clusters.len(),
            })
            .sum();
        let plaintext = listener.plaintext.as_ref().map_or(0, hosts_answering);
        out.insert((listener.bind, listener.port), servers + plaintext);
    }
    for listener in &plan.tcp {
        out.insert((listener.bind, listener.port), 1);
    }
    out
}

fn hosts_answering(table: &HostTable) -> usize {
    table
        .hosts()
        .iter()
        .filter(|host| host.https_redirect || !host.routes.is_empty())
        .count()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{config::load_sources, model::Instance};

    /// The plan of a Gateway with HTTP servers on `ports` for `*.example`, and `more`.
    fn plan_of(ports: &[u16], more: &str) -> Plan {
        let mut text = String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n",
        );
        for port in ports {
            text.push_str(&format!(
                "  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [\"*.example\"]\n"
            ));
        }
        text.push_str(more);
        let config = load_sources(&[(PathBuf::from("t.yaml"), text)]);
        crate::compile::plan(&config.model, &Instance::default(), &[]).expect("plan")
    }

    const ROUTED: &str = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: istio-system}\nspec:\n  hosts: [a.example]\n  gateways: [gw]\n  http:\n  - directResponse: {status: 200}\n";

    #[test]
    fn a_listener_left_with_no_route_is_named_and_one_that_keeps_some_is_not() {
        let before = plan_of(&[80], ROUTED);
        // The VirtualService is gone (a file cut after the Gateway).
        let emptied = plan_of(&[80], "");
        assert_eq!(
            listeners_losing_every_route(&before, &emptied),
            vec!["*:80".to_string()]
        );
        // The listener itself removed is an edit, not a loss.
        assert!(listeners_losing_every_route(&before, &plan_of(&[8080], "")).is_empty());
        // A listener that served nothing before loses nothing, and one
        // that keeps its route loses nothing either.
        assert!(listeners_losing_every_route(&emptied, &emptied).is_empty());
        assert!(listeners_losing_every_route(&before, &plan_of(&[80, 81], ROUTED)).is_empty());
        // Only the listener that lost everything is named.
        let two = plan_of(&[80, 81], ROUTED);
        let lost = listeners_losing_every_route(&two, &plan_of(&[80, 81], ""));
        assert_eq!(lost, vec!["*:80".to_string(), "*:81".to_string()]);
    }

    #[test]
    fn an_https_redirect_answers_without_a_route() {
        let before = plan_of(&[80], ROUTED);
        let redirect = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: r, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"r.example\"]\n    tls: {httpsRedirect: true}\n";
        assert!(listeners_losing_every_route(&before, &plan_of(&[80], redirect)).is_empty());
    }
}
