//! The judge's table: every key a compose model can carry, each with one
//! verdict. A key that is not here is refused.
//!
//! Keys are written as paths through the model: `services.*.volumes[].bind`,
//! where `*` stands for a name the file chose (a service, a volume, a
//! network, a ulimit) and `[]` for the items of a list. The checklist is
//! the JSON schema each compose tool carries (Debian's docker-compose 1.29
//! `compose_spec.json`, and the one compiled into compose v2); a test walks
//! both and fails when either names a key that has no row here. A few rows
//! name what only compose's printed model holds (`[]` item rows whose value
//! is judged whole).

use crate::policy::Allowance;

/// One key of the model and what the judge says of it.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub key: &'static str,
    pub verdict: Verdict,
}

/// What the judge says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted, whatever its value.
    Admitted,
    /// Admitted; its keys or items are judged by their own rows.
    Nested,
    /// Judged with the entry it belongs to (that entry's check reads it).
    Part,
    /// Admitted when the check passes.
    If(Check),
    /// Admitted only when `allow` names the class, once the value is set
    /// as `When` says.
    Allow(Allowance, When),
    /// Never admitted; the text says why.
    Refused(&'static str),
}

/// When a value counts as set, for [`Verdict::Allow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `true`.
    True,
    /// Not empty, zero or false.
    NonEmpty,
}

/// The conditions under which a key is admitted. Each is a function of
/// the judge; [`Check::describe`] says what it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    HostPath,
    MountedFile,
    ProjectName,
    Image,
    ContainerName,
    Labels,
    Namespace,
    SecurityOpt,
    Sysctls,
    OomScoreAdj,
    Logging,
    Mount,
    Propagation,
    VolumesFrom,
    Volume,
    Network,
    IpamDriver,
    Build,
    CacheRefs,
    BuildNetwork,
    Entitlements,
    BuildTags,
}

impl Check {
    /// What the check admits, in a sentence for the README's table.
    pub fn describe(self) -> &'static str {
        match self {
            Check::HostPath => {
                "a host path that lies, symlinks followed, under the project's `host_paths`"
            }
            Check::MountedFile => {
                "a host path as for a bind: under the project's `host_paths`; the Docker socket needs `docker_socket`; under a directory a container binds read-write needs `volume_options`"
            }
            Check::ProjectName => "the job's compose project",
            Check::Image => "a repository under `model_images`, when the project sets it",
            Check::ContainerName => "a name the project's `containers` allow",
            Check::Labels => "labels outside compose's own `com.docker.compose.*`",
            Check::Namespace => {
                "the container's own (`private`, `shareable`, `none`, `bridge`) or another service of the project; `host` needs `host_namespaces`; a container or network outside the project needs `foreign_resources` (a network the project's `networks` name is admitted)"
            }
            Check::SecurityOpt => {
                "`no-new-privileges`; profiles the project's `security_opts` list (a seccomp file also a host path); `unconfined`, `label=disable` and `systempaths=unconfined` need `unconfined`"
            }
            Check::Sysctls => {
                "`net.*` (the container's own network namespace) and `kernel.shm_rmid_forced`; any other needs `kernel`"
            }
            Check::OomScoreAdj => "0 or more; below 0 needs `kernel`",
            Check::Logging => {
                "the drivers that write on this host (`json-file`, `local`, `journald`, `none`) with their own options; `syslog`, `gelf`, `fluentd`, `awslogs`, `splunk`, `gcplogs`, `logentries` need `remote_logging`"
            }
            Check::Mount => {
                "a bind of a host path under `host_paths` (the Docker socket, or a directory holding it, needs `docker_socket`), a volume of the project, or a tmpfs; modes `rw`, `ro`, `z`, `Z`, `nocopy`, `private`, `rprivate`"
            }
            Check::Propagation => {
                "`private` or `rprivate`; `shared`, `slave` and their `r` forms need `volume_options`"
            }
            Check::VolumesFrom => {
                "another service of the project; a container needs `foreign_resources`"
            }
            Check::Volume => {
                "the project's own volume (named `<project>_<key>`) with the `local` driver and no options, a bind (`type: none`, `o: bind`/`rbind` with `ro`, `rw`, `nosuid`, `nodev`, `noexec`, an absolute `device` under `host_paths`), or `type: tmpfs` with `size`, `mode`, `uid`, `gid`; NFS and CIFS need `network_volumes`; other drivers, types and options need `volume_options`; external volumes, and volumes named outside the project or existing without its compose label, need `foreign_resources`"
            }
            Check::Network => {
                "the project's own network (named `<project>_<key>`), or one the project's `networks` name, with the `bridge` driver and the options `enable_icc`, `enable_ip_masquerade`, `host_binding_ipv4`, `mtu`, `container_iface_prefix`; the `host` driver needs `host_namespaces`, other drivers and options `kernel`, other names and networks existing without the project's compose label `foreign_resources`"
            }
            Check::IpamDriver => "`default`",
            Check::Build => {
                "a build context under `host_paths` (a remote git or https context is no host path), its Dockerfile, `ssh` keys and local `additional_contexts` under `host_paths`; the gateway's own SSH agent (`default` without a key) is refused"
            }
            Check::CacheRefs => {
                "image references, `type=registry` and `type=inline`; `type=local` with its `src` or `dest` under `host_paths`"
            }
            Check::BuildNetwork => {
                "`default` or `none`; `host` needs `host_namespaces`; another network needs the project's `networks` or `foreign_resources`"
            }
            Check::Entitlements => {
                "`network.host` needs `host_namespaces`, `security.insecure` needs `privileged`"
            }
            Check::BuildTags => "repositories under `model_images`, when the project sets it",
        }
    }
}

use Check::*;
use Verdict::{Admitted, Allow, If, Nested, Part, Refused};
use When::{NonEmpty, True};

const WINDOWS_ONLY: &str = "a Windows credential spec, which has no meaning on this host";
const SWARM_ONLY: &str = "a Swarm secret driver, which compose does not use";
const SECRET_FROM_ENV: &str =
    "the value would come from the gateway's own environment, not the project's";

const fn row(key: &'static str, verdict: Verdict) -> Row {
    Row { key, verdict }
}

/// Every key and its verdict.
pub const TABLE: &[Row] = &[
    // Top level.
    row("version", Admitted),
    row("name", If(ProjectName)),
    row("include", If(HostPath)),
    row("include[].path", If(HostPath)),
    row("include[].env_file", If(HostPath)),
    row("include[].project_directory", If(HostPath)),
    row("services", Nested),
    row("services.*", Nested),
    row("volumes", Nested),
    row("volumes.*", If(Volume)),
    row("volumes.*.driver", Part),
    row("volumes.*.driver_opts", Part),
    row("volumes.*.external", Part),
    row("volumes.*.external.name", Part),
    row("volumes.*.labels", If(Labels)),
    row("volumes.*.name", Part),
    row("networks", Nested),
    row("networks.*", If(Network)),
    row("networks.*.attachable", Admitted),
    row("networks.*.driver", Part),
    row("networks.*.driver_opts", Part),
    row("networks.*.enable_ipv4", Admitted),
    row("networks.*.enable_ipv6", Admitted),
    row("networks.*.external", Part),
    row("networks.*.external.name", Part),
    row("networks.*.internal", Admitted),
    row("networks.*.ipam", Nested),
    row("networks.*.ipam.config", Allow(Allowance::Kernel, NonEmpty)),
    row("networks.*.ipam.config[].aux_addresses", Admitted),
    row("networks.*.ipam.config[].gateway", Admitted),
    row("networks.*.ipam.config[].ip_range", Admitted),
    row("networks.*.ipam.config[].subnet", Admitted),
    row("networks.*.ipam.driver", If(IpamDriver)),
    row(
        "networks.*.ipam.options",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row("networks.*.labels", If(Labels)),
    row("networks.*.name", Part),
    row("secrets", Nested),
    row("secrets.*", Nested),
    row("secrets.*.driver", Refused(SWARM_ONLY)),
    row("secrets.*.driver_opts", Refused(SWARM_ONLY)),
    row("secrets.*.environment", Refused(SECRET_FROM_ENV)),
    row(
        "secrets.*.external",
        Allow(Allowance::ForeignResources, NonEmpty),
    ),
    row("secrets.*.external.name", Part),
    row("secrets.*.file", If(MountedFile)),
    row("secrets.*.labels", If(Labels)),
    row("secrets.*.name", Admitted),
    row("secrets.*.template_driver", Refused(SWARM_ONLY)),
    row("configs", Nested),
    row("configs.*", Nested),
    row("configs.*.content", Admitted),
    row("configs.*.environment", Refused(SECRET_FROM_ENV)),
    row(
        "configs.*.external",
        Allow(Allowance::ForeignResources, NonEmpty),
    ),
    row("configs.*.external.name", Part),
    row("configs.*.file", If(MountedFile)),
    row("configs.*.labels", If(Labels)),
    row("configs.*.name", Admitted),
    row("configs.*.template_driver", Refused(SWARM_ONLY)),
    // A service.
    row("services.*.annotations", Allow(Allowance::Kernel, NonEmpty)),
    row("services.*.attach", Admitted),
    row("services.*.blkio_config", Nested),
    row("services.*.blkio_config.device_read_bps", Nested),
    row("services.*.blkio_config.device_read_bps[].path", Admitted),
    row("services.*.blkio_config.device_read_bps[].rate", Admitted),
    row("services.*.blkio_config.device_read_iops", Nested),
    row("services.*.blkio_config.device_read_iops[].path", Admitted),
    row("services.*.blkio_config.device_read_iops[].rate", Admitted),
    row("services.*.blkio_config.device_write_bps", Nested),
    row("services.*.blkio_config.device_write_bps[].path", Admitted),
    row("services.*.blkio_config.device_write_bps[].rate", Admitted),
    row("services.*.blkio_config.device_write_iops", Nested),
    row("services.*.blkio_config.device_write_iops[].path", Admitted),
    row("services.*.blkio_config.device_write_iops[].rate", Admitted),
    row("services.*.blkio_config.weight", Admitted),
    row("services.*.blkio_config.weight_device", Nested),
    row("services.*.blkio_config.weight_device[].path", Admitted),
    row("services.*.blkio_config.weight_device[].weight", Admitted),
    row("services.*.build", If(Build)),
    row("services.*.build.additional_contexts", Part),
    row("services.*.build.args", Admitted),
    row("services.*.build.cache_from", If(CacheRefs)),
    row("services.*.build.cache_to", If(CacheRefs)),
    row("services.*.build.context", Part),
    row("services.*.build.dockerfile", Part),
    row("services.*.build.dockerfile_inline", Admitted),
    row("services.*.build.entitlements", If(Entitlements)),
    row("services.*.build.extra_hosts", Admitted),
    row(
        "services.*.build.isolation",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row("services.*.build.labels", Admitted),
    row("services.*.build.network", If(BuildNetwork)),
    row("services.*.build.no_cache", Admitted),
    row("services.*.build.platforms", Admitted),
    row(
        "services.*.build.privileged",
        Allow(Allowance::Privileged, True),
    ),
    row("services.*.build.pull", Admitted),
    row("services.*.build.secrets", Nested),
    row("services.*.build.secrets[].gid", Admitted),
    row("services.*.build.secrets[].mode", Admitted),
    row("services.*.build.secrets[].source", Admitted),
    row("services.*.build.secrets[].target", Admitted),
    row("services.*.build.secrets[].uid", Admitted),
    row("services.*.build.shm_size", Admitted),
    row("services.*.build.ssh", Part),
    row("services.*.build.tags", If(BuildTags)),
    row("services.*.build.target", Admitted),
    row("services.*.build.ulimits", Nested),
    row("services.*.build.ulimits.*", Nested),
    row("services.*.build.ulimits.*.hard", Admitted),
    row("services.*.build.ulimits.*.soft", Admitted),
    row("services.*.cap_add", Allow(Allowance::CapAdd, NonEmpty)),
    row("services.*.cap_drop", Admitted),
    row("services.*.cgroup", If(Namespace)),
    row(
        "services.*.cgroup_parent",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row("services.*.command", Admitted),
    row("services.*.configs", Nested),
    row("services.*.configs[].gid", Admitted),
    row("services.*.configs[].mode", Admitted),
    row("services.*.configs[].source", Admitted),
    row("services.*.configs[].target", Admitted),
    row("services.*.configs[].uid", Admitted),
    row("services.*.container_name", If(ContainerName)),
    row("services.*.cpu_count", Admitted),
    row("services.*.cpu_percent", Admitted),
    row("services.*.cpu_period", Admitted),
    row("services.*.cpu_quota", Admitted),
    row(
        "services.*.cpu_rt_period",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row(
        "services.*.cpu_rt_runtime",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row("services.*.cpu_shares", Admitted),
    row("services.*.cpus", Admitted),
    row("services.*.cpuset", Admitted),
    row("services.*.credential_spec", Refused(WINDOWS_ONLY)),
    row("services.*.credential_spec.config", Refused(WINDOWS_ONLY)),
    row("services.*.credential_spec.file", Refused(WINDOWS_ONLY)),
    row("services.*.credential_spec.registry", Refused(WINDOWS_ONLY)),
    row("services.*.depends_on", Nested),
    row("services.*.depends_on.*", Nested),
    row("services.*.depends_on.*.condition", Admitted),
    row("services.*.depends_on.*.required", Admitted),
    row("services.*.depends_on.*.restart", Admitted),
    row("services.*.deploy", Nested),
    row("services.*.deploy.endpoint_mode", Admitted),
    row("services.*.deploy.labels", Admitted),
    row("services.*.deploy.mode", Admitted),
    row("services.*.deploy.placement", Nested),
    row("services.*.deploy.placement.constraints", Admitted),
    row(
        "services.*.deploy.placement.max_replicas_per_node",
        Admitted,
    ),
    row("services.*.deploy.placement.preferences", Nested),
    row("services.*.deploy.placement.preferences[].spread", Admitted),
    row("services.*.deploy.replicas", Admitted),
    row("services.*.deploy.resources", Nested),
    row("services.*.deploy.resources.limits", Nested),
    row("services.*.deploy.resources.limits.cpus", Admitted),
    row("services.*.deploy.resources.limits.memory", Admitted),
    row("services.*.deploy.resources.limits.pids", Admitted),
    row("services.*.deploy.resources.reservations", Nested),
    row("services.*.deploy.resources.reservations.cpus", Admitted),
    row(
        "services.*.deploy.resources.reservations.devices",
        Allow(Allowance::Gpus, NonEmpty),
    ),
    row(
        "services.*.deploy.resources.reservations.devices[].capabilities",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.devices[].count",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.devices[].device_ids",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.devices[].driver",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.devices[].options",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.generic_resources",
        Nested,
    ),
    row(
        "services.*.deploy.resources.reservations.generic_resources[].discrete_resource_spec",
        Nested,
    ),
    row(
        "services.*.deploy.resources.reservations.generic_resources[].discrete_resource_spec.kind",
        Admitted,
    ),
    row(
        "services.*.deploy.resources.reservations.generic_resources[].discrete_resource_spec.value",
        Admitted,
    ),
    row("services.*.deploy.resources.reservations.memory", Admitted),
    row("services.*.deploy.restart_policy", Nested),
    row("services.*.deploy.restart_policy.condition", Admitted),
    row("services.*.deploy.restart_policy.delay", Admitted),
    row("services.*.deploy.restart_policy.max_attempts", Admitted),
    row("services.*.deploy.restart_policy.window", Admitted),
    row("services.*.deploy.rollback_config", Nested),
    row("services.*.deploy.rollback_config.delay", Admitted),
    row("services.*.deploy.rollback_config.failure_action", Admitted),
    row(
        "services.*.deploy.rollback_config.max_failure_ratio",
        Admitted,
    ),
    row("services.*.deploy.rollback_config.monitor", Admitted),
    row("services.*.deploy.rollback_config.order", Admitted),
    row("services.*.deploy.rollback_config.parallelism", Admitted),
    row("services.*.deploy.update_config", Nested),
    row("services.*.deploy.update_config.delay", Admitted),
    row("services.*.deploy.update_config.failure_action", Admitted),
    row(
        "services.*.deploy.update_config.max_failure_ratio",
        Admitted,
    ),
    row("services.*.deploy.update_config.monitor", Admitted),
    row("services.*.deploy.update_config.order", Admitted),
    row("services.*.deploy.update_config.parallelism", Admitted),
    // `develop` is read only by `compose watch`, which the gateway never runs.
    row("services.*.develop", Nested),
    row("services.*.develop.watch", Nested),
    row("services.*.develop.watch[].action", Admitted),
    row("services.*.develop.watch[].exec", Nested),
    row("services.*.develop.watch[].exec.command", Admitted),
    row("services.*.develop.watch[].exec.environment", Admitted),
    row("services.*.develop.watch[].exec.privileged", Admitted),
    row("services.*.develop.watch[].exec.user", Admitted),
    row("services.*.develop.watch[].exec.working_dir", Admitted),
    row("services.*.develop.watch[].ignore", Admitted),
    row("services.*.develop.watch[].path", Admitted),
    row("services.*.develop.watch[].target", Admitted),
    row(
        "services.*.device_cgroup_rules",
        Allow(Allowance::Devices, NonEmpty),
    ),
    row("services.*.devices", Allow(Allowance::Devices, NonEmpty)),
    row("services.*.devices[].permissions", Admitted),
    row("services.*.devices[].source", Admitted),
    row("services.*.devices[].target", Admitted),
    row("services.*.dns", Admitted),
    row("services.*.dns_opt", Admitted),
    row("services.*.dns_search", Admitted),
    row("services.*.domainname", Admitted),
    row("services.*.entrypoint", Admitted),
    row("services.*.env_file", If(HostPath)),
    row("services.*.env_file[].format", Admitted),
    row("services.*.env_file[].path", If(HostPath)),
    row("services.*.env_file[].required", Admitted),
    row("services.*.environment", Admitted),
    row("services.*.expose", Admitted),
    row("services.*.extends", Nested),
    row("services.*.extends.file", If(HostPath)),
    row("services.*.extends.service", Admitted),
    row(
        "services.*.external_links",
        Allow(Allowance::ForeignResources, NonEmpty),
    ),
    row("services.*.extra_hosts", Admitted),
    row("services.*.gpus", Allow(Allowance::Gpus, NonEmpty)),
    row("services.*.gpus[].capabilities", Admitted),
    row("services.*.gpus[].count", Admitted),
    row("services.*.gpus[].device_ids", Admitted),
    row("services.*.gpus[].driver", Admitted),
    row("services.*.gpus[].options", Admitted),
    row("services.*.group_add", Admitted),
    row("services.*.healthcheck", Nested),
    row("services.*.healthcheck.disable", Admitted),
    row("services.*.healthcheck.interval", Admitted),
    row("services.*.healthcheck.retries", Admitted),
    row("services.*.healthcheck.start_interval", Admitted),
    row("services.*.healthcheck.start_period", Admitted),
    row("services.*.healthcheck.test", Admitted),
    row("services.*.healthcheck.timeout", Admitted),
    row("services.*.hostname", Admitted),
    row("services.*.image", If(Image)),
    row("services.*.init", Admitted),
    row("services.*.ipc", If(Namespace)),
    row("services.*.isolation", Allow(Allowance::Kernel, NonEmpty)),
    row("services.*.label_file", If(HostPath)),
    row("services.*.labels", If(Labels)),
    row("services.*.links", Admitted),
    row("services.*.logging", If(Logging)),
    row("services.*.logging.driver", Part),
    row("services.*.logging.options", Part),
    row("services.*.mac_address", Admitted),
    row("services.*.mem_limit", Admitted),
    row("services.*.mem_reservation", Admitted),
    row("services.*.mem_swappiness", Admitted),
    row("services.*.memswap_limit", Admitted),
    row("services.*.network_mode", If(Namespace)),
    row("services.*.networks", Nested),
    row("services.*.networks.*", Nested),
    row("services.*.networks.*.aliases", Admitted),
    row(
        "services.*.networks.*.driver_opts",
        Allow(Allowance::Kernel, NonEmpty),
    ),
    row("services.*.networks.*.gw_priority", Admitted),
    row("services.*.networks.*.ipv4_address", Admitted),
    row("services.*.networks.*.ipv6_address", Admitted),
    row("services.*.networks.*.link_local_ips", Admitted),
    row("services.*.networks.*.mac_address", Admitted),
    row("services.*.networks.*.priority", Admitted),
    row(
        "services.*.oom_kill_disable",
        Allow(Allowance::Kernel, True),
    ),
    row("services.*.oom_score_adj", If(OomScoreAdj)),
    row("services.*.pid", If(Namespace)),
    row("services.*.pids_limit", Admitted),
    row("services.*.platform", Admitted),
    row("services.*.ports", Nested),
    row("services.*.ports[].app_protocol", Admitted),
    row("services.*.ports[].host_ip", Admitted),
    row("services.*.ports[].mode", Admitted),
    row("services.*.ports[].name", Admitted),
    row("services.*.ports[].protocol", Admitted),
    row("services.*.ports[].published", Admitted),
    row("services.*.ports[].target", Admitted),
    row("services.*.post_start", Nested),
    row("services.*.post_start[].command", Admitted),
    row("services.*.post_start[].environment", Admitted),
    row(
        "services.*.post_start[].privileged",
        Allow(Allowance::Privileged, True),
    ),
    row("services.*.post_start[].user", Admitted),
    row("services.*.post_start[].working_dir", Admitted),
    row("services.*.pre_stop", Nested),
    row("services.*.pre_stop[].command", Admitted),
    row("services.*.pre_stop[].environment", Admitted),
    row(
        "services.*.pre_stop[].privileged",
        Allow(Allowance::Privileged, True),
    ),
    row("services.*.pre_stop[].user", Admitted),
    row("services.*.pre_stop[].working_dir", Admitted),
    row("services.*.privileged", Allow(Allowance::Privileged, True)),
    row("services.*.profiles", Admitted),
    row("services.*.pull_policy", Admitted),
    row("services.*.read_only", Admitted),
    row("services.*.restart", Admitted),
    row("services.*.runtime", Allow(Allowance::Kernel, NonEmpty)),
    row("services.*.scale", Admitted),
    row("services.*.secrets", Nested),
    row("services.*.secrets[].gid", Admitted),
    row("services.*.secrets[].mode", Admitted),
    row("services.*.secrets[].source", Admitted),
    row("services.*.secrets[].target", Admitted),
    row("services.*.secrets[].uid", Admitted),
    row("services.*.security_opt", If(SecurityOpt)),
    row("services.*.shm_size", Admitted),
    row("services.*.stdin_open", Admitted),
    row("services.*.stop_grace_period", Admitted),
    row("services.*.stop_signal", Admitted),
    row("services.*.storage_opt", Allow(Allowance::Kernel, NonEmpty)),
    row("services.*.sysctls", If(Sysctls)),
    row("services.*.tmpfs", Admitted),
    row("services.*.tty", Admitted),
    row("services.*.ulimits", Nested),
    row("services.*.ulimits.*", Nested),
    row("services.*.ulimits.*.hard", Admitted),
    row("services.*.ulimits.*.soft", Admitted),
    row("services.*.user", Admitted),
    row("services.*.userns_mode", If(Namespace)),
    row("services.*.uts", If(Namespace)),
    row("services.*.volumes", Nested),
    row("services.*.volumes[]", If(Mount)),
    row("services.*.volumes[].bind", Nested),
    row("services.*.volumes[].bind.create_host_path", Admitted),
    row("services.*.volumes[].bind.propagation", If(Propagation)),
    row("services.*.volumes[].bind.recursive", Admitted),
    row("services.*.volumes[].bind.selinux", Admitted),
    row("services.*.volumes[].consistency", Admitted),
    row("services.*.volumes[].read_only", Admitted),
    row("services.*.volumes[].source", Part),
    row("services.*.volumes[].target", Admitted),
    row("services.*.volumes[].tmpfs", Nested),
    row("services.*.volumes[].tmpfs.mode", Admitted),
    row("services.*.volumes[].tmpfs.size", Admitted),
    row("services.*.volumes[].type", Part),
    row("services.*.volumes[].volume", Nested),
    row("services.*.volumes[].volume.nocopy", Admitted),
    row("services.*.volumes[].volume.subpath", Admitted),
    row("services.*.volumes_from", If(VolumesFrom)),
    row("services.*.working_dir", Admitted),
];

/// How a verdict is counted and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Admitted,
    Conditional,
    AllowClass,
    Refused,
}

impl Verdict {
    pub fn kind(self) -> Kind {
        match self {
            Admitted | Nested => Kind::Admitted,
            Part | If(_) => Kind::Conditional,
            Allow(..) => Kind::AllowClass,
            Refused(_) => Kind::Refused,
        }
    }

    /// The verdict in words, for the README's table.
    pub fn describe(self) -> String {
        match self {
            Admitted => "admitted".into(),
            Nested => "admitted; its keys are judged on their own rows".into(),
            Part => "judged with the entry it belongs to".into(),
            If(check) => format!("admitted if {}", check.describe()),
            Allow(class, When::True) => format!("`true` needs `allow = [\"{class}\"]`"),
            Allow(class, When::NonEmpty) => format!("needs `allow = [\"{class}\"]` when set"),
            Refused(why) => format!("refused: {why}"),
        }
    }
}

/// The row of `key`, a table path.
pub fn row_of(key: &str) -> Option<&'static Row> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static str, &'static Row>> =
        std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| TABLE.iter().map(|r| (r.key, r)).collect())
        .get(key)
        .copied()
}

/// Whether rows exist below `key` (its keys or items have rows).
pub fn has_rows_below(key: &str) -> bool {
    static PARENTS: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    PARENTS
        .get_or_init(|| {
            let mut parents = std::collections::HashSet::new();
            for row in TABLE {
                let mut key = row.key;
                while let Some(parent) = parent_of(key) {
                    parents.insert(parent.to_owned());
                    key = parent;
                }
            }
            parents
        })
        .contains(key)
}

/// `a.b[].c` → `a.b[]`, `a.b[]` → `a.b`, `a.b` → `a`.
fn parent_of(key: &str) -> Option<&str> {
    if let Some(list) = key.strip_suffix("[]") {
        return Some(list);
    }
    key.rfind('.').map(|at| &key[..at])
}

/// The table as the README shows it: one line per key, in table order.
pub fn markdown() -> String {
    let mut text = String::from("| key | verdict |\n|---|---|\n");
    for row in TABLE {
        text.push_str(&format!(
            "| `{}` | {} |\n",
            row.key,
            row.verdict.describe().replace('|', "\\|")
        ));
    }
    text
}

/// How many rows have each kind of verdict.
pub fn counts() -> [(Kind, usize); 4] {
    let count = |kind| TABLE.iter().filter(|r| r.verdict.kind() == kind).count();
    [
        (Kind::Admitted, count(Kind::Admitted)),
        (Kind::Conditional, count(Kind::Conditional)),
        (Kind::AllowClass, count(Kind::AllowClass)),
        (Kind::Refused, count(Kind::Refused)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_row_and_every_row_a_parent() {
        let mut seen = std::collections::HashSet::new();
        for row in TABLE {
            assert!(seen.insert(row.key), "{} has two rows", row.key);
        }
        for row in TABLE {
            if let Some(parent) = parent_of(row.key) {
                let listed = row_of(parent).is_some()
                    || parent.ends_with("[]") && row_of(parent.trim_end_matches("[]")).is_some();
                assert!(listed, "{} has no row for its parent {parent}", row.key);
            }
        }
    }

    #[test]
    fn the_table_is_walked_by_parents() {
        assert!(has_rows_below("services.*"));
        assert!(has_rows_below("services.*.volumes[]"));
        assert!(has_rows_below("services.*.volumes[].bind"));
        assert!(!has_rows_below("services.*.environment"));
        assert_eq!(
            parent_of("services.*.volumes[].bind"),
            Some("services.*.volumes[]")
        );
    }
}
