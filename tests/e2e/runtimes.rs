//! Real container runtimes (Podman, containerd) on netd networks — written with issue 6.
