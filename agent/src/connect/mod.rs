//! Connectors as code: makes the Kafka Connect cluster run exactly the
//! connectors `connectors/*.yaml` declares, through Connect's REST API.
//!
//! - [`client`]: the REST calls behind the `ConnectApi` seam, and
//!   `ConnectClient`, the real blocking client.
//! - [`plan`](mod@plan): the pure planner (create, update, pause/resume/stop,
//!   delete what git does not declare, restart failures with backoff,
//!   refuse what Connect rejects) and the restart memory the caller keeps.
//! - [`reconcile`](mod@reconcile): validate, plan, apply, report.
//!
//! **Invariant:** a declaration is written to Connect only after Connect
//! validated it (its class installed, no field in error); a rejected one
//! leaves its connector as it is.

pub mod client;
pub mod plan;
pub mod reconcile;

pub use client::{
    BasicAuth, ConnectApi, ConnectClient, ConnectConfig, ConnectError, ConnectorPlugin,
    ConnectorStatus, InstanceStatus, ObservedConnector, TaskStatus, Validation, WorkerState,
};
pub use plan::{
    ConnectorAction, DesiredConnector, HEALTHY_RESET, RestartMemory, RestartRecord, Verdict, plan,
    restart_backoff,
};
pub use reconcile::{ConnectorReport, ConnectorsReport, TaskReport, reconcile};
