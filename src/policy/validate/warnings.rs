//! What a shared host lacks: warnings about projects whose boundaries
//! leave a way into another's.

use std::collections::HashSet;

use super::Reader;
use crate::policy::{ModelMode, ProjectSpec};

impl Reader<'_> {
    /// On a host shared by several projects: a project with neither
    /// `compose_files` nor `compose_projects` is bounded by its container
    /// names alone, and two projects whose `containers` can match one name
    /// share that container.
    pub(super) fn boundary_warnings(&mut self, specs: &[ProjectSpec]) {
        if specs.len() < 2 {
            return;
        }
        for spec in specs {
            self.missing_boundaries(spec);
        }
        self.overlapping_containers(specs);
    }

    /// What one project lacks to be kept apart from the others: a bound on
    /// its compose files and project names, and where its model is judged,
    /// its host paths and images.
    fn missing_boundaries(&mut self, spec: &ProjectSpec) {
        if spec.compose_files.is_none()
            && spec.compose_projects.is_none()
            && !spec.containers.is_empty()
        {
            self.warn(
                spec.containers_span.clone(),
                format!(
                    "project `{}` has neither `compose_files` nor `compose_projects`: on a shared host its container names are its only boundary from the other projects",
                    spec.name
                ),
            );
        } else if spec.compose_files.is_some() && spec.compose_projects.is_none() {
            self.warn(
                spec.containers_span.clone(),
                format!(
                    "project `{}` bounds its compose files but not its compose project names: its own files started under another project's compose name (`-p`) would act on that project's containers and networks; add `compose_projects`",
                    spec.name
                ),
            );
        }
        let judged = spec.compose_model != Some(ModelMode::Off) && !spec.containers.is_empty();
        if judged && spec.compose_files.is_none() && spec.host_paths.is_none() {
            self.warn(
                spec.containers_span.clone(),
                format!(
                    "project `{}` has neither `compose_files` nor `host_paths`: its host paths are its compose files' real directories, which a project that can write its own directory moves by making a compose file a symlink; set `compose_files` or `host_paths`",
                    spec.name
                ),
            );
        }
        if judged && spec.model_images.is_none() {
            self.warn(
                spec.containers_span.clone(),
                format!(
                    "project `{}` has no `model_images`: its compose files may name, build and tag any image, another project's included (whose next start without a pull runs it); set `model_images`",
                    spec.name
                ),
            );
        }
    }

    /// Two projects whose container patterns can match one name, which
    /// neither excludes: each pair once, with such a name.
    fn overlapping_containers(&mut self, specs: &[ProjectSpec]) {
        // Only patterns whose literal prefixes nest can share a name; sorted
        // by prefix, those that extend one prefix stand together.
        let mut allows: Vec<(&str, usize, &str)> = specs
            .iter()
            .enumerate()
            .flat_map(|(i, spec)| {
                spec.containers
                    .iter()
                    .filter(|p| !p.starts_with('!'))
                    .map(move |p| (crate::policy::overlap::literal_prefix(p), i, p.as_str()))
            })
            .collect();
        allows.sort_unstable();
        let mut reported = HashSet::new();
        for (at, &(prefix, owner, pattern)) in allows.iter().enumerate() {
            for &(_, other, other_pattern) in allows[at + 1..]
                .iter()
                .take_while(|(p, _, _)| p.starts_with(prefix))
            {
                let pair = (owner.min(other), owner.max(other));
                if owner == other || reported.contains(&pair) {
                    continue;
                }
                let denied = |spec: &ProjectSpec, name: &str| {
                    spec.containers
                        .iter()
                        .filter_map(|p| p.strip_prefix('!'))
                        .any(|p| {
                            crate::policy::glob(p, crate::policy::GlobSyntax::ContainerName)
                                .is_ok_and(|g| g.compile_matcher().is_match(name))
                        })
                };
                let shared = crate::policy::overlap::shared_name(pattern, other_pattern)
                    .filter(|n| !denied(&specs[owner], n) && !denied(&specs[other], n));
                if let Some(name) = shared {
                    reported.insert(pair);
                    let (a, b) = (&specs[pair.0], &specs[pair.1]);
                    self.warn(
                        b.containers_span.clone(),
                        format!(
                            "projects `{}` and `{}` may both deploy some containers (`{pattern}` and `{other_pattern}` both match e.g. `{name}`)",
                            a.name, b.name
                        ),
                    );
                }
            }
        }
    }
}
