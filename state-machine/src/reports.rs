//! The committed inputs of the predictive features: health samples and
//! clock estimates of nodes and sessions, measured outside the state
//! machine and proposed by the leader. Node clock estimates feed
//! ρ_cluster (`time.rs`); a node whose drift crosses
//! `time.alert_drift_ppm` upwards raises `NodeClockAlert`
//! (docs/design.md "Clock drift on the nodes").

use driftlock_proto::{ClockEstimate, Event, HealthSample, Rejection, Reply, Subject};

use crate::apply::Ctx;
use crate::command::Response;
use crate::validate::permille_out_of_range;
use crate::StateMachine;

impl StateMachine {
    pub(crate) fn health_report(&mut self, subject: Subject, sample: HealthSample) -> Response {
        if let Some((field, v)) = permille_out_of_range(&sample) {
            return Err(Rejection::InvalidReport {
                detail: format!("{field} = {v} exceeds 1000"),
            });
        }
        match subject {
            Subject::Node(id) => {
                self.node_health.insert(id, sample);
            }
            Subject::Session(id) => match self.sessions.get_mut(&id) {
                Some(s) => s.health = Some(sample),
                None => return Err(Rejection::UnknownSession { session: id }),
            },
        }
        Ok(Reply::Done)
    }

    pub(crate) fn clock_report(&mut self, subject: Subject, estimate: ClockEstimate, ctx: &mut Ctx) -> Response {
        match subject {
            Subject::Node(id) => {
                let alert_ppb = i128::from(self.config.time.alert_drift_ppm) * 1000;
                let over = |e: &ClockEstimate| i128::from(e.drift_ppb).abs() > alert_ppb;
                let was_over = self.node_clocks.get(&id).is_some_and(over);
                if over(&estimate) && !was_over {
                    ctx.events.push(Event::NodeClockAlert {
                        node: id,
                        drift_ppb: estimate.drift_ppb,
                        drift_sigma_ppb: estimate.drift_sigma_ppb,
                        alert_drift_ppm: self.config.time.alert_drift_ppm,
                    });
                }
                self.node_clocks.insert(id, estimate);
            }
            Subject::Session(id) => match self.sessions.get_mut(&id) {
                Some(s) => s.clock = Some(estimate),
                None => return Err(Rejection::UnknownSession { session: id }),
            },
        }
        Ok(Reply::Done)
    }
}
