-- Argo CD health check for every ModelCycle kind (modelcycle.io/v1alpha1: Dataset, TrainingRun,
-- ModelVersion, ModelDeployment, ModelMonitor). It reads only the status the operator writes and
-- mirrors kstatus (sigs.k8s.io/cli-utils/pkg/kstatus):
--
--   no status, or status.observedGeneration behind metadata.generation  -> Progressing
--   Stalled=True or Degraded=True                                        -> Degraded
--   ModelVersion Validated=False (decided) / TrainingRun Succeeded=False -> Degraded
--   Reconciling=True                                                     -> Progressing
--   Ready=True                                                           -> Healthy
--   anything else (Ready=False/Unknown, or no Ready yet)                 -> Progressing
--
-- A ModelMonitor that detects drift stays Healthy (drift is what it is there to report, and it
-- starts retraining itself); the message names the drifted features.
-- Tested by tests/unit/test_argocd_health.py on status objects built from the pydantic models.

-- Reasons of Validated=False / Succeeded=False that mean "not decided yet", not a failure.
local undecided = {
  Pending = true, InProgress = true, Running = true, Waiting = true, Validating = true,
  WaitingForArtifact = true, WaitingForDataset = true, WaitingForJob = true,
}

local function find(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local function health(obj)
  local kind = obj.kind
  if obj.status == nil then
    return "Progressing", "Waiting for the operator to report the " .. tostring(kind) .. "'s status"
  end
  local generation = nil
  if obj.metadata ~= nil then
    generation = obj.metadata.generation
  end
  local observed = obj.status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return "Progressing", "Waiting for the operator to observe generation " .. tostring(generation)
  end

  local conditions = obj.status.conditions
  local stalled = find(conditions, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    return "Degraded", describe(stalled)
  end
  local degraded = find(conditions, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    return "Degraded", describe(degraded)
  end
  if kind == "ModelVersion" then
    local validated = find(conditions, "Validated")
    if validated ~= nil and validated.status == "False" and not undecided[validated.reason or ""] then
      return "Degraded", describe(validated)
    end
  end
  if kind == "TrainingRun" then
    local succeeded = find(conditions, "Succeeded")
    if succeeded ~= nil and succeeded.status == "False" and not undecided[succeeded.reason or ""] then
      return "Degraded", describe(succeeded)
    end
  end

  local reconciling = find(conditions, "Reconciling")
  if reconciling ~= nil and reconciling.status == "True" then
    return "Progressing", describe(reconciling)
  end
  local ready = find(conditions, "Ready")
  if ready == nil then
    return "Progressing", "Waiting for the Ready condition"
  end
  if ready.status ~= "True" then
    return "Progressing", describe(ready)
  end
  if kind == "ModelMonitor" then
    local drift = find(conditions, "DriftDetected")
    if drift ~= nil and drift.status == "True" then
      return "Healthy", describe(drift)
    end
  end
  return "Healthy", describe(ready)
end

local hs = {}
hs.status, hs.message = health(obj)
return hs
