//! `latchkey schema` and docs/protocol.schema.json (issue 17): the checked-in schema is the
//! one the types make, so a change to a wire type that forgets the schema fails here.
//! `LATCHKEY_WRITE_SCHEMA=1 cargo test -p latchkey-cli --test cli schema` rewrites the file.

use std::path::Path;

use latchkey_test_support::{bin, run};

#[tokio::test]
async fn the_checked_in_schema_is_the_one_the_wire_types_make() {
    let printed = run(bin::latchkey(), &["schema"], None).await;
    printed.assert_code(0);
    let generated: serde_json::Value = serde_json::from_str(&printed.stdout)
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{printed}"));
    assert_eq!(generated, latchkey_client::schema());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.schema.json");
    if std::env::var_os("LATCHKEY_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &printed.stdout).expect("write the schema");
    }
    let checked_in = std::fs::read_to_string(&path).expect("docs/protocol.schema.json");
    assert!(
        checked_in.trim_end() == printed.stdout.trim_end(),
        "docs/protocol.schema.json differs from `latchkey schema`: rewrite it with \
         LATCHKEY_WRITE_SCHEMA=1 cargo test -p latchkey-cli --test cli schema, and say in \
         docs/PROTOCOL.md what changed"
    );
    // Every method is in the schema's request type, and no other.
    let variants: Vec<String> = generated["$defs"]["LatchkeyRequest"]["oneOf"]
        .as_array()
        .expect("the request type is a oneOf")
        .iter()
        .flat_map(|v| v["required"].as_array().cloned().unwrap_or_default())
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    assert_eq!(variants, latchkey_client::METHODS);
    assert_eq!(
        generated["x-methods"],
        serde_json::json!(latchkey_client::METHODS)
    );
}
