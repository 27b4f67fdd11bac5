//! The protocol as one JSON Schema document (draft 2020-12), generated from the wire types
//! so it cannot drift from them. `docs/protocol.schema.json` is this document, checked in;
//! a test fails when the two differ.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::{LatchkeyRequest, LatchkeyResponse, METHODS, PROTOCOL_VERSION};

/// Every frame of the protocol as JSON Schema: `$defs/ClientFrame` is what a client sends,
/// `$defs/ServerFrame` what the daemon answers; `LatchkeyRequest` and `LatchkeyResponse`
/// hold one variant per method, keyed by its wire name. Extra keys: `x-protocol` (the
/// version, [`PROTOCOL_VERSION`]) and `x-methods` (the wire names, [`METHODS`]).
///
/// ```
/// let schema = latchkey_client::schema();
/// assert_eq!(schema["x-protocol"], latchkey_client::PROTOCOL_VERSION);
/// assert!(schema["$defs"]["LatchkeyRequest"].is_object());
/// ```
pub fn schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let request = generator.subschema_for::<LatchkeyRequest>();
    let response = generator.subschema_for::<LatchkeyResponse>();
    let mut defs = serde_json::Map::new();
    for (name, schema) in generator.take_definitions(true) {
        defs.insert(name, schema);
    }
    defs.insert(
        "Deadline".into(),
        json!({
            "description": "How long from now the caller will wait: a relative duration, at most 86400 s. Required.",
            "type": "object",
            "properties": {
                "secs": {"type": "integer", "minimum": 0, "maximum": 86400},
                "nanos": {"type": "integer", "minimum": 0, "maximum": 999_999_999}
            },
            "required": ["secs"]
        }),
    );
    defs.insert(
        "ClientFrame".into(),
        json!({
            "description": "One frame from the client: a request, or the cancellation of one in flight.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "Request": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer", "minimum": 0, "description": "Chosen by the client, unique among its calls in flight on this connection; the reply carries it as request_id."},
                                "context": {
                                    "type": "object",
                                    "properties": {
                                        "deadline": {"$ref": "#/$defs/Deadline"},
                                        "trace_context": {"description": "Optional: tarpc's trace context, for correlating spans.", "type": "object"}
                                    },
                                    "required": ["deadline"]
                                },
                                "message": request,
                            },
                            "required": ["id", "context", "message"]
                        }
                    },
                    "required": ["Request"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": {
                        "Cancel": {
                            "type": "object",
                            "properties": {
                                "request_id": {"type": "integer", "minimum": 0},
                                "trace_context": {"type": "object"}
                            },
                            "required": ["request_id", "trace_context"]
                        }
                    },
                    "required": ["Cancel"],
                    "additionalProperties": false
                }
            ]
        }),
    );
    defs.insert(
        "ServerError".into(),
        json!({
            "description": "The daemon did not run the call. kind: 0 unknown method (the daemon is older than the client), 10 throttled (too many calls in flight; safe to retry), 11 invalid request (a missing or mistyped argument, an absent or absurd deadline); any other number: treat as not run.",
            "type": "object",
            "properties": {
                "kind": {"type": "integer", "minimum": 0},
                "detail": {"type": "string"}
            },
            "required": ["kind", "detail"]
        }),
    );
    defs.insert(
        "ServerFrame".into(),
        json!({
            "description": "One frame from the daemon: the reply to the request with that id.",
            "type": "object",
            "properties": {
                "request_id": {"type": "integer", "minimum": 0},
                "message": {
                    "oneOf": [
                        {"type": "object", "properties": {"Ok": response}, "required": ["Ok"], "additionalProperties": false},
                        {"type": "object", "properties": {"Err": {"$ref": "#/$defs/ServerError"}}, "required": ["Err"], "additionalProperties": false}
                    ]
                }
            },
            "required": ["request_id", "message"]
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "The latchkeyd wire protocol",
        "description": "Generated from the Rust types of latchkey-client by `latchkey schema`; see docs/PROTOCOL.md. Each frame is this JSON behind a 4-byte big-endian length.",
        "x-protocol": PROTOCOL_VERSION,
        "x-methods": METHODS,
        "oneOf": [
            {"$ref": "#/$defs/ClientFrame"},
            {"$ref": "#/$defs/ServerFrame"}
        ],
        "$defs": defs,
    })
}
