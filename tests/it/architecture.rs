//! ARCHITECTURE.md's map against the tree: every source and test file is
//! on it, and nothing on it is missing from the tree.

use std::collections::BTreeSet;
use std::path::Path;

const MAP_BEGIN: &str = "<!-- map: begin -->";
const MAP_END: &str = "<!-- map: end -->";

/// Every file the map must name: the crate's sources, the benchmark, and
/// the tests (their fixtures and Python caches aside).
fn tree(root: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut pending = vec![root.join("src"), root.join("benches"), root.join("tests")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "fixtures" && name != "__pycache__" {
                    pending.push(path);
                }
            } else {
                let relative = path.strip_prefix(root).unwrap();
                files.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    files
}

/// The first word of each line of the map that does not continue another.
fn mapped(architecture: &str) -> BTreeSet<String> {
    let begin = architecture
        .find(MAP_BEGIN)
        .expect("the map's begin marker");
    let end = architecture.find(MAP_END).expect("the map's end marker");
    architecture[begin + MAP_BEGIN.len()..end]
        .lines()
        .filter(|line| !line.starts_with("```") && !line.starts_with(char::is_whitespace))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_architecture_map_names_every_file_of_the_tree_and_no_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let on_map = mapped(&architecture);
    let in_tree = tree(root);
    let unmapped: Vec<_> = in_tree.difference(&on_map).collect();
    let gone: Vec<_> = on_map.difference(&in_tree).collect();
    assert!(
        unmapped.is_empty() && gone.is_empty(),
        "files missing from ARCHITECTURE.md's map: {unmapped:?}; on the map but not in the tree: {gone:?}"
    );
}
