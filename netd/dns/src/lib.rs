//! netd dns subsystem (placeholder).
