"""Pure decisions of the controllers: what a reconcile should do, from what it observed.

Controllers observe (read the object and its children), ask a planner, apply the plan (create,
replace, patch, delete) and report the status and Events it names. Planners import no kopf and no
Kubernetes client, so every transition is unit-tested without a cluster.
"""
