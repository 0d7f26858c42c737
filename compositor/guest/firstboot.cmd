@echo off
rem layerbot first-boot runner: runs the connector's scripts once, in order, then shuts
rem Windows down so the publishing task can reach Done.
rem Once, even when a script shuts Windows down itself: RUNNING names the script that runs; a
rem later start that finds RUNNING without DONE logs that the previous run was interrupted,
rem writes DONE and neither runs the scripts again nor shuts down.
rem Batch scripts run in a cmd.exe of their own: a plain `exit N` in one (common) would end
rem this runner too if it were `call`ed.
setlocal EnableExtensions
set "LB=%SystemRoot%\Setup\Scripts\layerbot"
set "LOG=%SystemRoot%\Temp\layerbot-firstboot.log"
set "DONE=%LB%\firstboot.done"
set "RUNNING=%LB%\firstboot.running"
set "SHUTDOWN_MODE=@SHUTDOWN@"
if exist "%DONE%" exit /b 0
if exist "%RUNNING%" goto :interrupted
>> "%LOG%" echo %DATE% %TIME% layerbot firstboot: start
> "%RUNNING%" echo no script yet
set "STATUS=0"
for %%S in ("%LB%\??-*") do call :run "%%~fS"
>> "%LOG%" echo %DATE% %TIME% layerbot firstboot: finished (status %STATUS%)
> "%DONE%" echo %DATE% %TIME% status %STATUS%
del "%RUNNING%"
if /i not "%SHUTDOWN_MODE%"=="auto" exit /b 0
>> "%LOG%" echo %DATE% %TIME% shutting down
shutdown /s /t 0
exit /b 0

:interrupted
set "WAS="
set /p WAS=<"%RUNNING%"
>> "%LOG%" echo %DATE% %TIME% layerbot firstboot: the previous run was interrupted while running %WAS% (a script shut Windows down, or it lost power); not running the scripts again, not shutting down
> "%DONE%" echo %DATE% %TIME% status interrupted
del "%RUNNING%"
exit /b 0

:run
> "%RUNNING%" echo %~nx1
>> "%LOG%" echo %DATE% %TIME% run %~nx1
set "STARTED=%TIME%"
if /i "%~x1"==".ps1" (
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~1" >> "%LOG%" 2>&1
) else if /i "%~x1"==".cmd" (
    cmd.exe /d /c ""%~1"" >> "%LOG%" 2>&1
) else if /i "%~x1"==".bat" (
    cmd.exe /d /c ""%~1"" >> "%LOG%" 2>&1
) else if /i "%~x1"==".vbs" (
    cscript.exe //nologo "%~1" >> "%LOG%" 2>&1
) else (
    "%~1" >> "%LOG%" 2>&1
)
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" set "STATUS=%RC%"
>> "%LOG%" echo %DATE% %TIME% exit %RC% (started %STARTED%): %~nx1
exit /b 0
