//! The shape of `delivery.toml`, as serde reads it: every table a type,
//! every value with its position.
//!
//! serde's derived impls stop at the first value of the wrong type, and an
//! operator wants every problem at once. So each value is a [`Field`],
//! which holds either the value or the type that was found instead, and
//! each table collects the keys it does not know instead of refusing them.
//! Nothing here judges a value; `load.rs` does, with the positions kept
//! here.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A value of the expected shape, or the TOML type found instead.
#[derive(Debug)]
pub(super) enum Field<T> {
    Value(T),
    Wrong { found: &'static str },
}

/// What a [`Field`] can hold: each shape takes the TOML values it accepts
/// and leaves the rest to be reported.
pub(super) trait Shape: Sized {
    fn boolean(_: bool) -> Option<Self> {
        None
    }

    fn integer(_: i128) -> Option<Self> {
        None
    }

    fn string(_: &str) -> Option<Self> {
        None
    }

    /// An array; `None` leaves it to be drained and reported.
    fn array<'de, A: SeqAccess<'de>>(_: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(None)
    }

    /// A table; `None` leaves it to be drained and reported.
    fn table<'de, A: MapAccess<'de>>(_: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(None)
    }
}

impl Shape for bool {
    fn boolean(b: bool) -> Option<Self> {
        Some(b)
    }
}

/// Integers are read as TOML holds them; their range is judged later.
impl Shape for i128 {
    fn integer(n: i128) -> Option<Self> {
        Some(n)
    }
}

impl Shape for String {
    fn string(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

/// An array, each item with its position and shape.
pub(super) type List<T> = Vec<Spanned<Field<T>>>;

impl<T: Shape> Shape for Vec<Spanned<Field<T>>> {
    fn array<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// A table of any keys, in the file's order.
pub(super) type Entries<T> = Vec<(Spanned<String>, Spanned<Field<T>>)>;

impl<T: Shape> Shape for Vec<(Spanned<String>, Spanned<Field<T>>)> {
    fn table<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Some(entries))
    }
}

/// A claim's patterns: one value, or an array of them. Numbers and
/// booleans stand for their text.
#[derive(Debug)]
pub(super) enum ClaimValue {
    One(String),
    Many(List<ClaimText>),
}

/// A claim value written as a string, an integer or a boolean.
#[derive(Debug)]
pub(super) struct ClaimText(pub String);

impl Shape for ClaimText {
    fn boolean(b: bool) -> Option<Self> {
        Some(Self(b.to_string()))
    }

    fn integer(n: i128) -> Option<Self> {
        i64::try_from(n).ok().map(|n| Self(n.to_string()))
    }

    fn string(s: &str) -> Option<Self> {
        Some(Self(s.to_owned()))
    }
}

impl Shape for ClaimValue {
    fn boolean(b: bool) -> Option<Self> {
        ClaimText::boolean(b).map(|t| Self::One(t.0))
    }

    fn integer(n: i128) -> Option<Self> {
        ClaimText::integer(n).map(|t| Self::One(t.0))
    }

    fn string(s: &str) -> Option<Self> {
        Some(Self::One(s.to_owned()))
    }

    fn array<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(List::array(seq)?.map(Self::Many))
    }
}

/// `[docker] compose`: a tool's name, or an argv.
#[derive(Debug)]
pub(super) enum ComposeValue {
    Name(String),
    Argv(List<String>),
}

impl Shape for ComposeValue {
    fn string(s: &str) -> Option<Self> {
        Some(Self::Name(s.to_owned()))
    }

    fn array<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Self>, A::Error> {
        Ok(List::array(seq)?.map(Self::Argv))
    }
}

impl<'de, T: Shape> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<T> FieldVisitor<T> {
    fn judged(value: Option<T>, found: &'static str) -> Field<T> {
        value.map_or(Field::Wrong { found }, Field::Value)
    }
}

impl<'de, T: Shape> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Field<T>, E> {
        Ok(Self::judged(T::boolean(b), "boolean"))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Field<T>, E> {
        Ok(Self::judged(T::integer(n.into()), "integer"))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Field<T>, E> {
        Ok(Self::judged(T::integer(n.into()), "integer"))
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Field<T>, E> {
        Ok(Self::judged(T::integer(n), "integer"))
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Field<T>, E> {
        Ok(Self::judged(
            i128::try_from(n).ok().and_then(T::integer),
            "integer",
        ))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<T>, E> {
        Ok(Field::Wrong { found: "float" })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Field<T>, E> {
        Ok(Self::judged(T::string(s), "string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<T>, A::Error> {
        let value = T::array(&mut seq)?;
        if value.is_none() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(Self::judged(value, "array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<T>, A::Error> {
        let value = T::table(&mut map)?;
        if value.is_none() {
            // A date-time arrives as a table of one private key.
            let mut datetime = false;
            while let Some(key) = map.next_key::<String>()? {
                datetime |= key.starts_with("$__toml_private");
                map.next_value::<IgnoredAny>()?;
            }
            return Ok(Field::Wrong {
                found: if datetime { "datetime" } else { "table" },
            });
        }
        Ok(Self::judged(value, "table"))
    }
}

/// Declares a table of known keys: each an optional [`Field`] with its
/// position, and the keys it does not know, with theirs.
macro_rules! table {
    ($(#[$doc:meta])* $name:ident { $($key:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub(super) struct $name {
            $(pub $key: Option<Spanned<Field<$ty>>>,)*
            pub unknown: Vec<Spanned<String>>,
        }

        impl $name {
            /// The keys this table knows, in the order they are declared.
            #[cfg(test)]
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];
        }

        impl Shape for $name {
            fn table<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error> {
                let mut table = Self::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.get_ref().as_str() {
                        $(stringify!($key) => table.$key = Some(map.next_value()?),)*
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            table.unknown.push(key);
                        }
                    }
                }
                Ok(Some(table))
            }
        }
    };
}

table!(
    /// The whole file.
    Document {
        server: Server,
        docker: Docker,
        notify: Notify,
        projects: Entries<Project>,
    }
);

table!(
    /// `[server]`.
    Server {
        listen: String,
        docs: bool,
        metrics: bool,
        metrics_listen: String,
        state_dir: String,
        client_ip_header: String,
        trusted_proxies: List<String>,
        max_body_bytes: i128,
        timestamp_tolerance_secs: i128,
        max_wait_secs: i128,
        max_connections: i128,
        max_connections_per_address: i128,
        max_waiting_per_project: i128,
        request_timeout_secs: i128,
        replay_cache_entries: i128,
        replay_entries_per_project: i128,
        auth_failure_limit: i128,
        auth_failure_window_secs: i128,
        job_history_days: i128,
        job_history_max: i128,
        release_history: i128,
        public_url: String,
        ui: Ui,
    }
);

table!(
    /// `[server.ui]`.
    Ui {
        enabled: bool,
        insecure_cookies: bool,
        viewers: List<Viewer>,
    }
);

table!(
    /// `[[server.ui.viewers]]`.
    Viewer {
        name: String,
        token_env: String,
        projects: List<String>,
    }
);

table!(
    /// `[docker]`.
    Docker {
        compose: ComposeValue,
        job_timeout_secs: i128,
        max_parallel_jobs: i128,
        shutdown_grace_secs: i128,
        stable_secs: i128,
    }
);

table!(
    /// `[projects.<name>]`.
    Project {
        secrets: List<String>,
        containers: List<String>,
        actions: List<String>,
        compose_files: List<String>,
        compose_projects: List<String>,
        images: List<String>,
        rollback: bool,
        services: List<String>,
        oidc: List<Oidc>,
        compose_model: String,
        host_paths: List<String>,
        allow: List<String>,
        networks: List<String>,
        security_opts: List<String>,
        model_images: List<String>,
        notify: List<Target>,
    }
);

table!(
    /// `[notify]`.
    Notify { smtp: Smtp }
);

table!(
    /// `[notify.smtp]`.
    Smtp {
        host: String,
        port: i128,
        tls: String,
        from: String,
        username_env: String,
        password_env: String,
    }
);

table!(
    /// `[[projects.<name>.notify]]`.
    Target {
        kind: String,
        url_env: String,
        secret_env: String,
        events: List<String>,
        to: List<String>,
    }
);

table!(
    /// `[[projects.<name>.oidc]]`.
    Oidc {
        issuer: String,
        audience: String,
        claims: Entries<ClaimValue>,
        jwks_file: String,
        max_token_age_secs: i128,
    }
);

/// Reads the document's shape from its parsed tree.
pub(super) fn document(
    root: Spanned<toml::de::DeTable<'_>>,
) -> Result<Spanned<Field<Document>>, toml::de::Error> {
    let span = root.span();
    let field = Field::deserialize(toml::de::Deserializer::from(root))?;
    Ok(Spanned::new(span, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Document {
        let (root, errors) = toml::de::DeTable::parse_recoverable(text);
        assert!(errors.is_empty(), "{errors:?}");
        match document(root).unwrap().into_inner() {
            Field::Value(d) => d,
            Field::Wrong { found } => panic!("a {found}"),
        }
    }

    /// The example policy is where operators look an option up: every key
    /// of every table is shown there, set or commented out.
    #[test]
    fn the_example_policy_shows_every_key() {
        let example = include_str!("../../delivery.toml.example");
        let shown: std::collections::HashSet<&str> = example
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .flat_map(|l| match l.strip_prefix('[') {
                // A table's header shows each of its names as a key.
                Some(header) => header
                    .trim_matches(['[', ']'])
                    .split('.')
                    .collect::<Vec<_>>(),
                None => l.split_once(" =").map(|(key, _)| key).into_iter().collect(),
            })
            .collect();
        let tables = [
            ("", Document::KEYS),
            ("server", Server::KEYS),
            ("server.ui", Ui::KEYS),
            ("server.ui.viewers", Viewer::KEYS),
            ("docker", Docker::KEYS),
            ("projects.*", Project::KEYS),
            ("notify", Notify::KEYS),
            ("notify.smtp", Smtp::KEYS),
            ("projects.*.notify", Target::KEYS),
            ("projects.*.oidc", Oidc::KEYS),
        ];
        let missing: Vec<String> = tables
            .iter()
            .flat_map(|(table, keys)| keys.iter().map(move |k| (table, k)))
            .filter(|(_, k)| !shown.contains(**k))
            .map(|(table, k)| format!("{table}.{k}"))
            .collect();
        assert!(
            missing.is_empty(),
            "not in delivery.toml.example: {missing:?}"
        );
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_kept_beside_good_values() {
        let d = read(
            "[server]\ndocs = \"yes\"\nmetrics = true\ncolour = 1\nmax_body_bytes = 1.5\n[docker]\ncompose = [\"docker\", 2]\n",
        );
        let server = match d.server.unwrap().into_inner() {
            Field::Value(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            server.docs.unwrap().get_ref(),
            Field::Wrong { found: "string" }
        ));
        assert!(matches!(
            server.metrics.unwrap().get_ref(),
            Field::Value(true)
        ));
        assert!(matches!(
            server.max_body_bytes.unwrap().get_ref(),
            Field::Wrong { found: "float" }
        ));
        let unknown: Vec<&str> = server
            .unknown
            .iter()
            .map(|k| k.get_ref().as_str())
            .collect();
        assert_eq!(unknown, ["colour"]);
        let docker = match d.docker.unwrap().into_inner() {
            Field::Value(d) => d,
            other => panic!("{other:?}"),
        };
        let Field::Value(ComposeValue::Argv(argv)) = docker.compose.unwrap().into_inner() else {
            panic!("an argv");
        };
        assert!(matches!(argv[0].get_ref(), Field::Value(s) if s == "docker"));
        assert!(matches!(
            argv[1].get_ref(),
            Field::Wrong { found: "integer" }
        ));
    }

    #[test]
    fn projects_keep_their_positions() {
        let text = "[projects.b]\nrollback = false\n[projects.a]\noidc = [{ issuer = 1, claims = { ref = [\"x\", true] } }]\n";
        let d = read(text);
        let Field::Value(projects) = d.projects.unwrap().into_inner() else {
            panic!("a table");
        };
        let names: Vec<&str> = projects.iter().map(|(k, _)| k.get_ref().as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let (name, _) = &projects[1];
        assert_eq!(&text[name.span()], "b");
        assert!(!text[..name.span().start].contains('\n'), "on line 1");
        let Field::Value(a) = projects[0].1.get_ref() else {
            panic!("a table");
        };
        let Field::Value(rules) = a.oidc.as_ref().unwrap().get_ref() else {
            panic!("an array");
        };
        let Field::Value(rule) = rules[0].get_ref() else {
            panic!("a table");
        };
        assert!(matches!(
            rule.issuer.as_ref().unwrap().get_ref(),
            Field::Wrong { found: "integer" }
        ));
        let Field::Value(claims) = rule.claims.as_ref().unwrap().get_ref() else {
            panic!("a table");
        };
        let Field::Value(ClaimValue::Many(items)) = claims[0].1.get_ref() else {
            panic!("a list");
        };
        assert!(matches!(items[1].get_ref(), Field::Value(ClaimText(t)) if t == "true"));
    }
}
