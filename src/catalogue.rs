//! The one catalogue of refusal codes: every code a response or a job
//! carries, with its kind (which alone decides an HTTP status), a title for
//! people, and the operations that can answer with it. The gateway answers
//! from it, the API document's responses are written from it, and a job
//! that stops before a command names its reason by one of its codes.

/// Why a request is refused, as a kind the HTTP layer maps to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed: its body, a name, a parameter.
    Invalid,
    /// Authentication failed.
    Unauthenticated,
    /// Authenticated, but outside the project's policy.
    Forbidden,
    /// Authenticated and allowed, but there is no such container or job; or
    /// no such endpoint.
    NotFound,
    /// The endpoint exists, but not with this method.
    MethodNotAllowed,
    /// The body did not arrive in time.
    BodyTimeout,
    /// The body is over the size limit.
    BodyTooLarge,
    /// The body is not sent as JSON.
    NotJson,
    /// The container exists but cannot be deployed.
    Undeployable,
    /// A bound on one client or project was reached; try again later.
    RateLimited,
    /// The engine, the store or the gateway itself cannot take it now.
    Unavailable,
}

impl RefusalKind {
    /// The kind's name, as the audit log shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Invalid => "invalid",
            RefusalKind::Unauthenticated => "unauthenticated",
            RefusalKind::Forbidden => "forbidden",
            RefusalKind::NotFound => "not_found",
            RefusalKind::MethodNotAllowed => "method_not_allowed",
            RefusalKind::BodyTimeout => "body_timeout",
            RefusalKind::BodyTooLarge => "body_too_large",
            RefusalKind::NotJson => "not_json",
            RefusalKind::Undeployable => "undeployable",
            RefusalKind::RateLimited => "rate_limited",
            RefusalKind::Unavailable => "unavailable",
        }
    }
}

/// An operation of the API, as far as refusals are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Pull,
    Build,
    GetJob,
    ListJobs,
    Readiness,
    ListReleases,
    Rollback,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::Pull,
        Operation::Build,
        Operation::GetJob,
        Operation::ListJobs,
        Operation::Readiness,
        Operation::ListReleases,
        Operation::Rollback,
    ];

    /// The operation's id in the API document.
    pub fn id(self) -> &'static str {
        match self {
            Operation::Pull => "pullContainer",
            Operation::Build => "buildContainer",
            Operation::GetJob => "getJob",
            Operation::ListJobs => "listJobs",
            Operation::Readiness => "getReadiness",
            Operation::ListReleases => "listReleases",
            Operation::Rollback => "rollbackService",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operations(u8);

impl Operations {
    pub(crate) const NONE: Operations = Operations(0);
    /// A rollback is a pull: it answers whatever a pull does.
    const PULL: Operations = Operations(Operation::Pull.bit() | Operation::Rollback.bit());
    const BUILD: Operations = Operations(Operation::Build.bit());
    const GET_JOB: Operations = Operations(Operation::GetJob.bit());
    const ROLLBACK: Operations = Operations(Operation::Rollback.bit());
    const LIST_RELEASES: Operations = Operations(Operation::ListReleases.bit());
    const DEPLOY: Operations = Operations(Self::PULL.0 | Self::BUILD.0);
    const DEPLOY_GET: Operations = Operations(Self::DEPLOY.0 | Operation::GetJob.bit());
    const READS: Operations = Operations(
        Operation::GetJob.bit() | Operation::ListJobs.bit() | Operation::ListReleases.bit(),
    );
    const SIGNED: Operations = Operations(Self::DEPLOY.0 | Self::READS.0);
    const READY: Operations = Operations(Operation::Readiness.bit());
    /// Naming a service: a deploy, or the read of its releases.
    const LOOKUP: Operations = Operations(Self::DEPLOY.0 | Operation::ListReleases.bit());
    const PULL_LOOKUP: Operations = Operations(Self::PULL.0 | Operation::ListReleases.bit());
    const LOOKUP_READY: Operations = Operations(Self::LOOKUP.0 | Self::READY.0);

    pub fn contains(self, operation: Operation) -> bool {
        self.0 & operation.bit() != 0
    }
}

/// Declares the catalogue: each code's variant, wire name, kind, the
/// operations that can return it, and its title.
macro_rules! catalogue {
    ($($variant:ident = $code:literal, $kind:ident, $operations:ident, $title:literal;)*) => {
        /// Every refusal the gateway can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// Stable and machine-readable, e.g. `signature_mismatch`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn kind(self) -> RefusalKind {
                match self {
                    $(Code::$variant => RefusalKind::$kind,)*
                }
            }

            /// The operations that can answer with this code.
            pub fn operations(self) -> Operations {
                match self {
                    $(Code::$variant => Operations::$operations,)*
                }
            }

            /// What the code means, in a phrase.
            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }
        }
    };
}

catalogue! {
    InvalidJson = "invalid_json", Invalid, DEPLOY, "the body is not JSON";
    InvalidBody = "invalid_body", Invalid, DEPLOY,
        "the body is not one object naming one container or service, pins an image on `/build` or `/rollback`, or a rollback's `to` is missing or not `previous` or a job id";
    InvalidContainerName = "invalid_container_name", Invalid, DEPLOY,
        "`container_name` does not match `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$`";
    InvalidServiceName = "invalid_service_name", Invalid, DEPLOY,
        "`service_name` does not match `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$`";
    InvalidImage = "invalid_image", Invalid, DEPLOY,
        "`image` is not `<repository>@sha256:<64 lowercase hex>`";
    InvalidWait = "invalid_wait", Invalid, DEPLOY_GET,
        "`wait` is not a whole number of seconds within the server's `max_wait_secs`";
    InvalidParameter = "invalid_parameter", Invalid, READS,
        "a path or query parameter is not valid";
    InvalidRequest = "invalid_request", Invalid, GET_JOB,
        "the request could not be read: a job id that is not text once decoded";
    MissingTimestamp = "missing_timestamp", Unauthenticated, SIGNED, "`X-Timestamp` is missing";
    InvalidTimestamp = "invalid_timestamp", Unauthenticated, SIGNED,
        "`X-Timestamp` is not Unix time in seconds";
    TimestampOutOfWindow = "timestamp_out_of_window", Unauthenticated, SIGNED,
        "`X-Timestamp` is further from the gateway's clock than the tolerance";
    MissingSignature = "missing_signature", Unauthenticated, SIGNED,
        "neither `X-Signature` nor a bearer token was sent";
    InvalidSignature = "invalid_signature", Unauthenticated, SIGNED,
        "`X-Signature` is not 64 hex digits, optionally after `sha256=`";
    MissingProject = "missing_project", Unauthenticated, READS,
        "`X-Project` is required on this request";
    InvalidProject = "invalid_project", Unauthenticated, SIGNED,
        "`X-Project` is not a project name";
    SignatureMismatch = "signature_mismatch", Unauthenticated, SIGNED,
        "the signature matches no key allowed for this request";
    InvalidToken = "invalid_token", Unauthenticated, SIGNED,
        "the CI token failed the check named in `rule`";
    ActionNotAllowed = "action_not_allowed", Forbidden, DEPLOY,
        "the project's `actions` do not include this one";
    ContainerNotAllowed = "container_not_allowed", Forbidden, LOOKUP,
        "the container's name matches none of the project's `containers`";
    ServiceNotAllowed = "service_not_allowed", Forbidden, LOOKUP,
        "the Swarm service's name matches none of the project's `services`";
    ComposeProjectNotAllowed = "compose_project_not_allowed", Forbidden, LOOKUP,
        "the container's compose project is not one of the project's `compose_projects`";
    ComposeFileNotAllowed = "compose_file_not_allowed", Forbidden, LOOKUP,
        "a compose file of the container lies outside the project's `compose_files`";
    ImageNotAllowed = "image_not_allowed", Forbidden, PULL,
        "the pinned repository is outside the project's `images` or, without them, not the compose file's";
    TokenNotAllowed = "token_not_allowed", Forbidden, SIGNED,
        "a valid CI token whose claims match no `oidc` rule of the project";
    ComposeModelNotAllowed = "compose_model_not_allowed", Forbidden, DEPLOY,
        "compose's model of the job holds a key or value the judge does not admit (outside `host_paths`, beyond `allow`, or unknown); `findings` name each service, key and reason";
    ContainerNotFound = "container_not_found", NotFound, LOOKUP,
        "no container has this exact name";
    ServiceNotFound = "service_not_found", NotFound, PULL_LOOKUP, "no Swarm service has this name";
    ServiceNotNamed = "service_not_named", NotFound, LIST_RELEASES,
        "the query names neither a container nor a Swarm service, or both, so no one service";
    ReleaseNotFound = "release_not_found", NotFound, ROLLBACK,
        "the service has no release of this project with this job id, or none other than the image it runs";
    JobNotFound = "job_not_found", NotFound, DEPLOY_GET,
        "no job with this id belongs to the project, or a replayed request's job is no longer kept";
    NotFound = "not_found", NotFound, NONE, "no such endpoint";
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed, NONE,
        "the endpoint does not accept this method";
    BodyTimeout = "body_timeout", BodyTimeout, DEPLOY,
        "the body did not arrive within the request timeout";
    BodyTooLarge = "body_too_large", BodyTooLarge, DEPLOY,
        "the body is larger than the server's `max_body_bytes`";
    UnsupportedMediaType = "unsupported_media_type", NotJson, DEPLOY,
        "the body is not sent as `application/json`";
    NotComposeManaged = "not_compose_managed", Undeployable, LOOKUP,
        "the container has no compose labels";
    ComposeLabelMissing = "compose_label_missing", Undeployable, LOOKUP,
        "a compose label the gateway needs is missing";
    ComposeLabelInvalid = "compose_label_invalid", Undeployable, LOOKUP,
        "a compose label is not valid";
    ComposeLabelUntrusted = "compose_label_untrusted", Undeployable, LOOKUP,
        "the image sets a compose label that compose does not always write itself";
    ComposeFileNotVisible = "compose_file_not_visible", Undeployable, LOOKUP,
        "a compose file is not visible to the gateway at the same absolute path as on the host";
    ComposeConfigInvalid = "compose_config_invalid", Undeployable, DEPLOY,
        "compose could not print the project's model; the message names the file and line";
    ComposeFilesChanged = "compose_files_changed", Undeployable, NONE,
        "a job's compose files resolved to other real files than it was admitted with";
    ProjectNotFound = "project_not_found", Forbidden, NONE,
        "a job's project is no longer in the policy";
    ReleaseNotRestorable = "release_not_restorable", Undeployable, ROLLBACK,
        "the release has no repository digest and its image is no longer on the host (or the service runs a pinned image, which cannot be pointed at it)";
    NotBuildable = "not_buildable", Undeployable, BUILD,
        "a Swarm service runs images from a registry and cannot be built";
    NotSwarmManager = "not_swarm_manager", Undeployable, PULL_LOOKUP,
        "the gateway's engine is not a Swarm manager";
    TooManyFailures = "too_many_failures", RateLimited, SIGNED,
        "too many failed authentications from this address";
    ProjectRateLimited = "project_rate_limited", RateLimited, DEPLOY,
        "this project's remembered requests are at their bound";
    TooManyWaiting = "too_many_waiting", RateLimited, DEPLOY_GET,
        "this project's requests waiting with `wait` are at their bound";
    EngineUnavailable = "engine_unavailable", Unavailable, LOOKUP_READY,
        "the Docker engine does not answer";
    StoreUnavailable = "store_unavailable", Unavailable, SIGNED,
        "the job store does not answer; nothing was run";
    ReplayCacheFull = "replay_cache_full", Unavailable, DEPLOY,
        "the replay memory is full";
    ShuttingDown = "shutting_down", Unavailable, DEPLOY, "the gateway is stopping";
    IssuerUnavailable = "issuer_unavailable", Unavailable, SIGNED,
        "no key set of the CI token's issuer could be had";
    InternalError = "internal_error", Unavailable, LOOKUP,
        "the gateway failed inside; nothing was run";
}

impl Code {
    /// The codes only a job carries (in its `error`), which no response
    /// answers with: why it stopped before a compose command.
    pub const ONLY_JOBS: [Code; 2] = [Code::ComposeFilesChanged, Code::ProjectNotFound];
}
