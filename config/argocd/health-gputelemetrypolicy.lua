-- Argo CD health of an mlobs.io/GpuTelemetryPolicy (install: argocd-cm-patch.yaml).
-- Lua 5.1 (Argo CD runs health scripts in gopher-lua); tested by tests/health.rs.
--
-- Healthy      Ready=True for the current generation: the policy is valid and its Managed
--              DCGM exporter (if any) runs on every GPU node.
-- Progressing  not yet reported on this generation, or the exporter is rolling out.
-- Degraded     the policy is invalid, or another policy also says default: true.
local hs = {}

local terminal = {
  InvalidSpec = true,
  DefaultConflict = true,
}

local function find(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
local ready = nil
local valid = nil
if status ~= nil then
  ready = find(status.conditions, "Ready")
  valid = find(status.conditions, "Valid")
end

if status == nil or ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
elseif generation ~= nil and (status.observedGeneration == nil or status.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation)
elseif generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "policy is valid"
elseif ready.status == "False" and ready.reason ~= nil and terminal[ready.reason] then
  hs.status = "Degraded"
  -- Ready only points at Valid; its message says what is wrong.
  if valid ~= nil and valid.status == "False" then
    hs.message = describe(valid)
  else
    hs.message = describe(ready)
  end
else
  hs.status = "Progressing"
  if ready.reason ~= nil then
    hs.message = describe(ready)
  else
    hs.message = "Ready is " .. tostring(ready.status)
  end
end
return hs
