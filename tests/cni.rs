//! CNI plugin end-to-end tests (written with the CNI plugin).
