//! The judge's table against the schemas the two compose tools carry:
//! every key either schema names has a row, and every row is a key of one
//! of them (or an item row, whose list the schema names). The README's
//! table of keys and verdicts is the table's own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use delivery_hook::docker::model::table::{self, TABLE};
use serde_json::Value;

/// Where Debian's docker-compose (v1) keeps its schema.
fn v1_schema() -> Option<Value> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("dist-packages/compose/config/compose_spec.json")
        })
        .find(|p| p.is_file())?;
    Some(serde_json::from_slice(&std::fs::read(found).ok()?).unwrap())
}

/// The schema compiled into the compose v2 plugin: the JSON object whose
/// `$id` is `compose_spec.json`, cut out of the binary.
fn v2_schema() -> Option<Value> {
    let home = std::env::var("HOME").unwrap_or_default();
    let plugin = [
        "/usr/local/lib/docker/cli-plugins/docker-compose",
        "/usr/libexec/docker/cli-plugins/docker-compose",
        "/usr/lib/docker/cli-plugins/docker-compose",
        &format!("{home}/.docker/cli-plugins/docker-compose"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())?;
    let bytes = std::fs::read(plugin).ok()?;
    let marker = b"\"$id\": \"compose_spec.json\"";
    let at = bytes.windows(marker.len()).position(|w| w == marker)?;
    let start = bytes[..at].iter().rposition(|&b| b == b'{')?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, &b) in bytes[start..].iter().enumerate() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{') => depth += 1,
            (false, _, b'}') => {
                depth -= 1;
                if depth == 0 {
                    let text = &bytes[start..=start + offset];
                    return Some(serde_json::from_slice(text).unwrap());
                }
            }
            _ => {}
        }
    }
    None
}

/// Every key path a schema names, written as the table writes them: `*`
/// for a name the file chooses, `[]` for a list's items.
fn keys_of(schema: &Value) -> BTreeSet<String> {
    let definitions = schema["definitions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut keys = BTreeSet::new();
    walk(schema, "", &definitions, &mut Vec::new(), &mut keys);
    keys
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    node: &Value,
    path: &str,
    definitions: &serde_json::Map<String, Value>,
    seen: &mut Vec<String>,
    keys: &mut BTreeSet<String>,
) {
    let Some(node) = node.as_object() else { return };
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
        if !seen.contains(&name) {
            if let Some(target) = definitions.get(&name) {
                seen.push(name);
                walk(target, path, definitions, seen, keys);
                seen.pop();
            }
        }
    }
    for alternatives in ["oneOf", "anyOf", "allOf"] {
        for alternative in node
            .get(alternatives)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(alternative, path, definitions, seen, keys);
        }
    }
    match node.get("items") {
        Some(Value::Array(items)) => {
            for item in items {
                walk(item, &format!("{path}[]"), definitions, seen, keys);
            }
        }
        Some(item) => walk(item, &format!("{path}[]"), definitions, seen, keys),
        None => {}
    }
    for (key, value) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let child = join(path, key);
        keys.insert(child.clone());
        walk(value, &child, definitions, seen, keys);
    }
    for (pattern, value) in node
        .get("patternProperties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        // Extension fields are the file's own, and admitted.
        if pattern.starts_with("^x-") {
            continue;
        }
        named_entries(value, path, definitions, seen, keys);
    }
    if let Some(value @ Value::Object(_)) = node.get("additionalProperties") {
        named_entries(value, path, definitions, seen, keys);
    }
}

/// The entries of a mapping whose keys the file chooses: a key of their
/// own (`services.*`) when they have keys in turn; a mapping of plain
/// values (`environment`, `labels`) is judged whole by its own row.
fn named_entries(
    value: &Value,
    path: &str,
    definitions: &serde_json::Map<String, Value>,
    seen: &mut Vec<String>,
    keys: &mut BTreeSet<String>,
) {
    let child = join(path, "*");
    let before = keys.len();
    walk(value, &child, definitions, seen, keys);
    if keys.len() > before {
        keys.insert(child);
    }
}

#[test]
fn every_key_both_compose_schemas_name_has_a_row_and_every_row_a_key() {
    let schemas = [("compose v1", v1_schema()), ("compose v2", v2_schema())];
    let mut named = BTreeSet::new();
    for (tool, schema) in &schemas {
        let Some(schema) = schema else {
            crate::support::skip(&format!("the schema {tool} carries is not installed here"));
            return;
        };
        let keys = keys_of(schema);
        assert!(keys.len() > 200, "{tool}: only {} keys read", keys.len());
        let missing: Vec<&String> = keys.iter().filter(|k| table::row_of(k).is_none()).collect();
        assert!(
            missing.is_empty(),
            "{tool}'s schema names keys the judge's table lacks (add a row each, with a test): {missing:#?}"
        );
        named.extend(keys);
    }
    let unnamed: Vec<&str> = TABLE
        .iter()
        .map(|row| row.key)
        .filter(|key| !named.contains(*key) && !key.ends_with("[]"))
        .collect();
    assert!(
        unnamed.is_empty(),
        "rows for keys no schema names: {unnamed:?}"
    );
    println!(
        "{} keys named by the schemas, {} rows: {:?}",
        named.len(),
        TABLE.len(),
        table::counts()
    );
}

#[test]
fn the_readmes_table_of_keys_is_the_judges() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = "<!-- compose-judge-table: begin -->\n";
    let end = "<!-- compose-judge-table: end -->";
    let start = readme
        .find(begin)
        .expect("the README marks the judge's table")
        + begin.len();
    let stop = readme[start..]
        .find(end)
        .expect("the table's end is marked")
        + start;
    let expected = table::markdown();
    assert!(
        readme[start..stop] == expected,
        "the README's table of compose keys differs from the judge's; replace it with:\n{expected}"
    );
}
