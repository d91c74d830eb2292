//! Alerts Alertmanager sends to the coordinator's webhook receiver, kept in
//! memory (the newest [`MAX_ALERTS`]) for the status API.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How many alerts the coordinator keeps.
pub const MAX_ALERTS: usize = 100;

/// Alertmanager's webhook payload (version 4), typed loosely: only what the
/// coordinator keeps is read, and unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerWebhook {
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of an Alertmanager notification.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub labels: Map<String, Value>,
    #[serde(default)]
    pub annotations: Map<String, Value>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    /// Alertmanager's identity of the alert (its label set's hash).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// `GET /v1/alerts`: an alert as the coordinator last received it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ReceivedAlert {
    /// Unix seconds.
    pub received_at: u64,
    /// The Alertmanager receiver that sent it.
    pub receiver: String,
    #[serde(flatten)]
    pub alert: AlertmanagerAlert,
}

/// The newest alerts, newest last. Alertmanager re-sends an alert with every
/// group notification, so an alert with a known fingerprint replaces its
/// older copy instead of filling the log with repeats.
#[derive(Debug, Default)]
pub(crate) struct AlertLog {
    alerts: VecDeque<ReceivedAlert>,
}

impl AlertLog {
    pub(crate) fn record(&mut self, payload: AlertmanagerWebhook, now: u64) -> usize {
        let count = payload.alerts.len();
        for alert in payload.alerts {
            if let Some(fingerprint) = alert.fingerprint.as_deref().filter(|f| !f.is_empty()) {
                self.alerts
                    .retain(|kept| kept.alert.fingerprint.as_deref() != Some(fingerprint));
            }
            self.alerts.push_back(ReceivedAlert {
                received_at: now,
                receiver: payload.receiver.clone(),
                alert,
            });
            while self.alerts.len() > MAX_ALERTS {
                self.alerts.pop_front();
            }
        }
        count
    }

    /// Newest first.
    pub(crate) fn newest_first(&self) -> Vec<ReceivedAlert> {
        self.alerts.iter().rev().cloned().collect()
    }
}

/// `POST /v1/alerts`: how many alerts the notification carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct AlertsAccepted {
    pub accepted: usize,
}
