# Palisade's enforcement tests on real Windows (the `windows` workflow). Each test attempts
# the forbidden thing inside `palisade run` and checks the outcome from outside: the canary
# unchanged, the file absent, the process gone, no ACL entry left. Everything lives under a
# fresh folder in $env:RUNNER_TEMP (or %TEMP%), removed at the end.
# NOT RUN on the machines Palisade is developed on (Linux): see docs/windows.md.
param([Parameter(Mandatory)] [string] $Palisade)
$ErrorActionPreference = 'Stop'
$base = Join-Path ($env:RUNNER_TEMP ?? $env:TEMP) ("palisade-enf-" + [guid]::NewGuid())
$ws = Join-Path $base 'ws'
$outside = Join-Path $base 'outside'
New-Item -ItemType Directory -Force $ws, $outside | Out-Null
$canary = Join-Path $outside 'secret.txt'
Set-Content $canary 'CANARY-4f1c'
$failures = @()

function Run-Inside([string[]] $argv) {
    Push-Location $ws
    try { $out = & $Palisade run --quiet -- @argv 2>&1 | Out-String; return @{ code = $LASTEXITCODE; out = $out } }
    finally { Pop-Location }
}
function Check([string] $name, [bool] $ok, [string] $detail) {
    if ($ok) { Write-Host "ok   $name" } else { Write-Host "FAIL $name: $detail"; $script:failures += $name }
}

# The backend refuses to run when Windows derives other SIDs than the plan: a run that works
# proves the derivation (crate::sid) matches DeriveCapabilitySidsFromName and the profile SID.
$r = Run-Inside @('cmd', '/c', 'echo', 'inside')
Check 'a command runs and the derived SIDs match Windows' ($r.code -eq 0 -and $r.out -match 'inside') $r.out

$r = Run-Inside @('cmd', '/c', "type `"$canary`"")
Check 'a canary outside the workspace is unreadable' ($r.out -notmatch 'CANARY-4f1c') $r.out

$r = Run-Inside @('cmd', '/c', "echo x> `"$outside\written.txt`"")
Check 'writing outside the workspace fails' (-not (Test-Path "$outside\written.txt")) $r.out

# A protected path that does not exist yet (.vscode) in every spelling: case, trailing dot,
# alternate data stream, short name.
foreach ($spelling in @('.vscode\settings.json', '.VSCODE\settings.json', '.vscode.\settings.json', '.vscode:evil', '.vscode::$DATA')) {
    Run-Inside @('cmd', '/c', "mkdir .vscode 2>nul & echo {} > `"$spelling`"") | Out-Null
    Check "protected .vscode stays absent ($spelling)" (-not (Test-Path (Join-Path $ws '.vscode'))) ''
}

# A junction and a hard link planted inside lead nowhere writable.
Run-Inside @('cmd', '/c', "mklink /J j `"$outside`" & echo x> j\via-junction.txt") | Out-Null
Check 'a junction to outside gives no write' (-not (Test-Path "$outside\via-junction.txt")) ''
Run-Inside @('cmd', '/c', "mklink /H h `"$canary`" & echo overwritten> h") | Out-Null
Check 'a hard link to the canary gives no write' ((Get-Content $canary) -eq 'CANARY-4f1c') ''

# A child outliving the command ends with the run.
$marker = 'palisade-outlive-' + [guid]::NewGuid().ToString('N').Substring(0, 8)
Run-Inside @('cmd', '/c', "start /b powershell -NoProfile -Command `"Start-Sleep 60 # $marker`"") | Out-Null
Start-Sleep 2
$left = Get-CimInstance Win32_Process | Where-Object { $_.CommandLine -match $marker }
Check 'no process outlives the run' ($null -eq $left) ($left | Out-String)

# Ways to start a process outside the job.
$task = 'palisade-escape-' + [guid]::NewGuid().ToString('N').Substring(0, 8)
Run-Inside @('schtasks', '/create', '/tn', $task, '/tr', 'cmd /c echo escaped', '/sc', 'once', '/st', '23:59') | Out-Null
& schtasks /query /tn $task 2>$null | Out-Null
Check 'schtasks cannot create a task' ($LASTEXITCODE -ne 0) ''
Run-Inside @('powershell', '-NoProfile', '-Command', "Invoke-CimMethod -ClassName Win32_Process -MethodName Create -Arguments @{CommandLine='cmd /c echo x> $outside\wmi.txt'}") | Out-Null
Start-Sleep 2
Check 'WMI cannot start a process outside' (-not (Test-Path "$outside\wmi.txt")) ''

# Ordinary work inside: git commit.
& git -C $ws init -q
$r = Run-Inside @('git', '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'commit', '-q', '--allow-empty', '-m', 'inside')
Check 'git commit works inside' ($r.code -eq 0) $r.out
& git -C $ws -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m 'outside, after'
Check "the host's own git commit works after the run" ($LASTEXITCODE -eq 0) ''

# The restricted-token tier (chosen by the user): writes confined as above; reads are not,
# and the run says so.
$rt = Join-Path $base 'rt.toml'
Set-Content $rt "[windows]`ntier = `"restricted_token`""
Push-Location $ws
try {
    $out = & $Palisade run --policy $rt -- cmd /c "echo x> `"$outside\rt-written.txt`"" 2>&1 | Out-String
    Check 'restricted token: writing outside fails' (-not (Test-Path "$outside\rt-written.txt")) $out
    $out = & $Palisade run --policy $rt -- cmd /c "echo inside> rt-inside.txt" 2>&1 | Out-String
    Check 'restricted token: writing in the workspace works' (Test-Path (Join-Path $ws 'rt-inside.txt')) $out
    & $Palisade run --policy $rt -- cmd /c "mkdir .vscode 2>nul & echo {} > .vscode\settings.json" 2>&1 | Out-Null
    Check 'restricted token: protected .vscode stays absent' (-not (Test-Path (Join-Path $ws '.vscode'))) ''
    $out = & $Palisade run --policy $rt --json -- cmd /c exit 0 2>&1 | Out-String
    Check 'restricted token: the run says reads are not confined' ($out -match 'reads: the restricted-token tier') $out
} finally { Pop-Location }

# Nothing left: forget removes every entry Palisade placed for the workspace.
& $Palisade forget $ws | Out-Host
$acl = (icacls $ws /T 2>$null | Out-String)
Check 'no capability entries after forget' ($acl -notmatch 'S-1-15-3-1024-') $acl

Remove-Item -Recurse -Force $base -ErrorAction SilentlyContinue
if ($failures.Count -gt 0) { Write-Host "$($failures.Count) failed: $($failures -join ', ')"; exit 1 }
Write-Host 'all enforcement tests passed'
