"""The witness that decides which site of a playbook is active: one interface (witness_base), the etcd cluster
that real estates run (etcd_witness), a fake for tests (fake_witness)."""
