"""The operator's controllers, one per kind, each with its reconcile, its RBAC rules and its dependents.

The one list `modelcycle operator` runs (controllers/main.py), the scheduler dispatches on
(controllers/scheduler.py) and the ClusterRole is made of (controllers/rbac.py).
"""

from __future__ import annotations

from modelcycle.controllers import dataset, modeldeployment, modelmonitor, modelversion, runtime, trainingrun

CONTROLLERS: tuple[runtime.Registration, ...] = (
    dataset.CONTROLLER,
    trainingrun.CONTROLLER,
    modelversion.CONTROLLER,
    modeldeployment.CONTROLLER,
    modelmonitor.CONTROLLER,
)
REGISTRY: dict[str, runtime.Registration] = {controller.kind.kind: controller for controller in CONTROLLERS}
