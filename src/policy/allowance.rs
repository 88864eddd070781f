//! The classes of what a project may let compose do beyond its own
//! compose project and host paths, named by its `allow` list.

/// One class of reach beyond the project, which only `allow` admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allowance {
    /// A bind of the Docker socket, or of a directory that holds it.
    DockerSocket,
    /// `privileged: true`, a privileged hook or build.
    Privileged,
    /// The host's `pid`, `ipc`, `uts`, `cgroup`, user or network namespace.
    HostNamespaces,
    CapAdd,
    /// Host devices and device cgroup rules.
    Devices,
    Gpus,
    /// A `security_opt` that weakens confinement (`unconfined`,
    /// `label:disable`, `systempaths=unconfined`).
    Unconfined,
    /// Settings of the kernel or the runtime that reach past the
    /// container: sysctls outside the network namespace, `cgroup_parent`,
    /// `runtime`, `isolation`, `storage_opt`, real-time scheduling, the OOM
    /// killer, network drivers other than `bridge`, address ranges.
    Kernel,
    /// What lies outside the job's compose project: external or
    /// foreign-named volumes and networks, other containers' namespaces
    /// and volumes, external links.
    ForeignResources,
    /// A logging driver that sends the logs to another host.
    RemoteLogging,
    /// NFS and CIFS volumes.
    NetworkVolumes,
    /// Every other volume driver, mount type or option: overlay, block
    /// devices, mount propagation. Root on the host.
    VolumeOptions,
}

impl Allowance {
    pub const ALL: [Allowance; 12] = [
        Allowance::DockerSocket,
        Allowance::Privileged,
        Allowance::HostNamespaces,
        Allowance::CapAdd,
        Allowance::Devices,
        Allowance::Gpus,
        Allowance::Unconfined,
        Allowance::Kernel,
        Allowance::ForeignResources,
        Allowance::RemoteLogging,
        Allowance::NetworkVolumes,
        Allowance::VolumeOptions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Allowance::DockerSocket => "docker_socket",
            Allowance::Privileged => "privileged",
            Allowance::HostNamespaces => "host_namespaces",
            Allowance::CapAdd => "cap_add",
            Allowance::Devices => "devices",
            Allowance::Gpus => "gpus",
            Allowance::Unconfined => "unconfined",
            Allowance::Kernel => "kernel",
            Allowance::ForeignResources => "foreign_resources",
            Allowance::RemoteLogging => "remote_logging",
            Allowance::NetworkVolumes => "network_volumes",
            Allowance::VolumeOptions => "volume_options",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl std::fmt::Display for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Allowance;

    #[test]
    fn allowances_have_one_name_each() {
        for a in Allowance::ALL {
            assert_eq!(Allowance::parse(a.as_str()), Some(a));
        }
        assert_eq!(Allowance::parse("everything"), None);
    }
}
