//! netd firewall subsystem (placeholder).
