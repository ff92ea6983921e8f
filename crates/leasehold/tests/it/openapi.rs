//! `/openapi.json` is generated from the handlers and matches the committed snapshot.

use crate::harness::{Backend, TestServer};
use serde_json::Value;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

#[tokio::test]
async fn openapi_document_describes_every_route_and_matches_the_snapshot() {
    let server = TestServer::start(Backend::Sqlite).await;
    let served: Value = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = served["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/workspace", "get"),
        ("/v1/applications", "post"),
        ("/v1/applications/{id}", "patch"),
        ("/v1/applications/{id}", "delete"),
        ("/v1/licenses", "post"),
        ("/v1/licenses", "get"),
        ("/v1/licenses/{id}", "get"),
        ("/v1/licenses/{id}", "patch"),
        ("/v1/licenses/{id}", "delete"),
        ("/v1/licenses/{id}/reveal-key", "post"),
        ("/v1/licenses/{id}/seats", "post"),
        ("/v1/licenses/{id}/seats", "get"),
        ("/v1/seats/{id}/reclaim", "post"),
        ("/v1/contacts", "post"),
        ("/v1/contacts/{id}/terminate", "post"),
        ("/v1/reminders", "get"),
        ("/v1/events", "get"),
        ("/v1/members", "post"),
        ("/v1/members/{id}", "patch"),
        ("/v1/members/{id}", "delete"),
        ("/v1/client/validate", "post"),
        ("/v1/client/activations", "post"),
        ("/v1/client/activations/{fingerprint}", "delete"),
        ("/v1/client/leases", "post"),
        ("/v1/client/leases/{id}/heartbeat", "post"),
        ("/v1/client/leases/{id}/instances/{instance}", "delete"),
        ("/v1/client/license-file", "get"),
        ("/v1/public-key", "get"),
        ("/keygen/v1/licenses/actions/validate-key", "post"),
        ("/keygen/v1/machines", "post"),
        ("/keygen/v1/machines/{id}", "delete"),
        ("/keygen/v1/machines/{id}/actions/ping", "post"),
        ("/keygen/v1/licenses/{id}/actions/check-out", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    // Every operation documents the errors any request to it may get (a fuzzer reads an
    // undocumented status as a failure).
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                for status in ["401", "403"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
        }
    }
    let schemas = served["components"]["schemas"].as_object().unwrap();
    for schema in [
        "CreateLicense",
        "License",
        "Seat",
        "ErrorBody",
        "Money",
        "LeasePolicy",
        "Binding",
        "ValidateAnswer",
        "Lease",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == pretty,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo nextest run openapi` and commit it"
    );
    server.stop().await;
}
