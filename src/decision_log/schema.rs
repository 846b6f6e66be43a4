//! The JSON Schema of a decision-log line, which `portcullis schema decision-log` prints.
//! Written by hand, beside the code that writes the line: it is a contract with log
//! pipelines and with `portcullis replay`, so each field is described where it is typed.

use serde_json::{Value, json};

/// The schema (JSON Schema 2020-12) every decision-log line satisfies, in every sink.
pub fn schema() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    let text_or_null =
        |description: &str| json!({ "type": ["string", "null"], "description": description });
    let texts = |description: &str| json!({ "type": "array", "items": { "type": "string" }, "description": description });
    let properties = json!({
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
            "description": "When the line was written, UTC, to the millisecond."
        },
        "decision": {
            "enum": ["allow", "deny", "error"],
            "description": "allow or deny; error for a request refused before deciding (400, 404, 405, 413, 431)."
        },
        "request.id": text("The request id: in the response's X-Request-Id, sent upstream, and the key of GET /decisions/{id}."),
        "route.id": text_or_null("The route taken; null when none was chosen."),
        "http.method": text("The request method, as sent."),
        "url.domain": text_or_null("The host decided on, lower-case, without port; null when the request named none, or was refused."),
        "url.path": text_or_null("The canonical path decided on (no query). Segments log.redact_paths hides are written {name}; null when refused."),
        "url.destination": text_or_null("The canonical destination path of a WebDAV MOVE or COPY, decided on too; otherwise null."),
        "client.ip": text("The client address the policy saw: the socket peer, or what a trusted proxy reported."),
        "client.geo.country_iso_code": {
            "type": ["string", "null"],
            "pattern": "^[A-Z0-9]{2}$",
            "description": "The client's country (ISO 3166-1 alpha-2; XX: unknown to the database). null when no rule names countries or it could not be found out."
        },
        "client.certificate": {
            "description": "The verified client certificate the connection showed, or null.",
            "anyOf": [
                { "type": "null" },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["subject", "dns", "uris", "fingerprint"],
                    "properties": {
                        "subject": text_or_null("The subject's common name."),
                        "dns": texts("Subject alternative names of the DNS kind, lower-case."),
                        "uris": texts("Subject alternative names of the URI kind (SPIFFE IDs among them)."),
                        "fingerprint": {
                            "type": "string",
                            "pattern": "^[0-9a-f]{64}$",
                            "description": "SHA-256 of the certificate, lower-case hex."
                        }
                    }
                }
            ]
        },
        "principal.id": text_or_null("The caller's subject (a token's sub, an API key's id); null when anonymous or refused."),
        "principal.issuer": text_or_null("Who vouched for the caller: a token issuer, api-key, or client_cert."),
        "principal.roles": texts("The caller's roles as granted (the policy adds inherited ones)."),
        "principal.scopes": texts("The caller's scopes as granted."),
        "principal.claims": {
            "type": "object",
            "additionalProperties": { "$ref": "#/$defs/claim" },
            "description": "Every claim that rules compare, by name: its value, null when the caller lacks it, {} when it is an object or null."
        },
        "http.request.headers": {
            "type": "object",
            "additionalProperties": texts("The field's values in order; [] when absent."),
            "description": "Every header that rules read, by lower-case name, except credentials (Authorization, Cookie, API-key and token headers) and log.redact_headers."
        },
        "decision.reason": {
            "type": "string",
            "pattern": "^[a-z][a-z0-9_]*$",
            "description": "The reason code: allowed, a denial's reason, or an error's."
        },
        "decision.explanation": text_or_null("The operator's sentence for the reason; null for an error."),
        "rule.id": text_or_null("The rule that decided: the matching rule, or for a default deny the closest allow rule; null when none came close."),
        "audit": {
            "type": "array",
            "items": { "type": "string", "pattern": ":would_(allow|deny)$" },
            "description": "Audit-mode rules that matched, as rule:would_allow or rule:would_deny."
        },
        "decision.micros": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Microseconds the policy took; null for an error."
        },
        "trace": {
            "type": "array",
            "description": "Every rule whose hosts and paths fit, in file order.",
            "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["rule", "effect", "mode", "outcome"],
                "properties": {
                    "rule": text("The rule's id."),
                    "effect": { "enum": ["allow", "deny"] },
                    "mode": { "enum": ["enforce", "audit"] },
                    "outcome": text("matched, or what did not fit, in words.")
                }
            }
        }
    });
    let required: Vec<&String> = properties
        .as_object()
        .map_or(Vec::new(), |p| p.keys().collect());
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "portcullis decision-log line",
        "description": "One JSON object per line, the same fields in every sink (log, stdout, a file) and in GET /decisions. Holds what deciding the request again needs; never a token, API key, cookie or query.",
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
        "if": { "properties": { "decision": { "enum": ["allow", "deny"] } } },
        "then": {
            "properties": {
                "route.id": { "type": "string" },
                "url.path": { "type": "string" },
                "decision.explanation": { "type": "string" },
                "decision.micros": { "type": "integer" }
            }
        },
        "$defs": {
            "claim": {
                "anyOf": [
                    { "type": ["string", "number", "boolean", "null"] },
                    { "type": "array", "items": { "$ref": "#/$defs/claim" } },
                    { "type": "object", "maxProperties": 0 }
                ]
            }
        }
    })
}
