//! The seams where the firewall and DNS subsystems plug into the network and endpoint flows.
//! Each `*_up` may fail (the caller rolls back); each `*_down` is best effort and only logs.

use netd_api::Network;

use super::{Daemon, DaemonError};
use crate::store::EndpointRecord;

impl Daemon {
    /// After the bridge is up: firewall table/chains for the network, DNS listener.
    pub(crate) async fn plug_network_up(&self, _net: &Network) -> Result<(), DaemonError> {
        Ok(())
    }

    /// Before the bridge goes: the network's firewall rules and DNS listener.
    pub(crate) async fn plug_network_down(&self, _net: &Network) {}

    /// After the veth is configured: firewall elements (ports, anti-spoofing), DNS records.
    pub(crate) async fn plug_endpoint_up(
        &self,
        _net: &Network,
        _rec: &EndpointRecord,
    ) -> Result<(), DaemonError> {
        Ok(())
    }

    /// Before the veth goes: DNS records, firewall elements.
    pub(crate) async fn plug_endpoint_down(&self, _net: &Network, _rec: &EndpointRecord) {}
}
