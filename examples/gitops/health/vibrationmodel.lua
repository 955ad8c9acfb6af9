-- Argo CD health check of edge.vibration.io/VibrationModel (Lua 5.1, as Argo CD runs it).
--
-- Healthy      the operator has seen the current spec and every selected node serves its
--              version: status.observedGeneration and the Ready condition are for
--              metadata.generation, and Ready is True.
-- Progressing  no status yet; a status or Ready condition written for an older generation
--              (stale: it describes a spec that is gone, so it is never Healthy); a rollout
--              under way (canary nodes first, then the rest).
-- Degraded     a node failed validation and the rollout stopped (Degraded=True for this
--              generation). The nodes keep serving their last good version; the message
--              names the node and the validator's reason. Also Degraded=True when a node's
--              serving pod cannot run (PodNotServing) or a node is not Ready, unschedulable or tainted
--              (NodeNotReady: a gateway powered off), as that machine goes unwatched until
--              it is back; the hall's other nodes keep serving. Also Degraded=True (or
--              Progressing for this generation, as older operators wrote it) with reason
--              InvalidUpdateWindow: spec.rollout.updateWindow does not read or never opens,
--              and holds every change until the spec is mended. Also: no node matches
--              spec.nodeSelector (Ready=False, reason NoNodes, for this generation), so the
--              model serves nowhere; waiting would keep a sync Progressing forever, where a
--              mistyped selector or an unlabelled hall should be seen. Also: nodes match
--              but none is Ready and schedulable (Degraded=True, reason NoReadyNodes: the
--              hall's gateways are off).
-- Suspended    the rollout waits for spec.rollout.updateWindow, spec.rollout.paused, or a manual approval.
--
-- Drift (Drifted=True) keeps a promoted model Healthy, with the drift in the message: the
-- rollout did what was asked and the hall serves a validated model. Drift says the machines'
-- data moved away from the training data, a retraining signal for people, not a failed
-- deployment; Degraded would make Argo CD report every drifted hall as a broken sync, page
-- whoever watches sync health, and block sync waves that have nothing to do with it.

local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- A condition counts only when it was set for the current generation.
local function current(c, generation)
  if c == nil then
    return false
  end
  if generation == nil then
    return true
  end
  return c.observedGeneration ~= nil and c.observedGeneration >= generation
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status is for " .. tostring(status.observedGeneration or "none") .. ")"
  return hs
end

local degraded = condition(status, "Degraded")
if current(degraded, generation) and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded, "Validation failed; nodes keep their last good version")
  return hs
end

local ready = condition(status, "Ready")
if current(ready, generation) and ready.status == "False" and ready.reason == "NoNodes" then
  hs.status = "Degraded"
  hs.message = text(ready, "No node matches spec.nodeSelector")
    .. ": label the hall's gateways or correct the selector"
  return hs
end

local progressing = condition(status, "Progressing")
if current(progressing, generation) and progressing.reason == "InvalidUpdateWindow" then
  hs.status = "Degraded"
  hs.message = text(progressing, "spec.rollout.updateWindow never opens")
  return hs
end

if status.phase == "Paused" or status.phase == "Waiting" then
  hs.status = "Suspended"
  hs.message = text(progressing, "Rollout " .. string.lower(status.phase))
  return hs
end

if current(ready, generation) and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Every selected node serves the target")
  local drifted = condition(status, "Drifted")
  if drifted ~= nil and drifted.status == "True" then
    hs.message = hs.message .. "; drifted: " .. text(drifted, "input drift") .. " (retraining advised)"
  end
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, text(progressing, "Rollout in progress"))
return hs
