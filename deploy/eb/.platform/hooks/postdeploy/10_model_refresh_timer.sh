#!/bin/bash
# {{ rendered_note }}
# Installs the scheduled model refresh on this instance. Amazon Linux 2023 has no cron: a systemd timer runs
# tand-model-refresh, which POSTs /update-model through nginx with the API token it reads from the
# environment's properties. Elastic Beanstalk runs this file as root from the application's folder after
# every deployment (.platform/hooks) and configuration change (.platform/confighooks); a failure fails the
# deployment. DESTDIR and SYSTEMCTL exist for local tests.
set -euo pipefail
source_dir="$PWD/.platform/tand"
dest="${DESTDIR:-}"
systemctl_cmd="${SYSTEMCTL:-systemctl}"

install -D -m 0755 "$source_dir/tand-model-refresh" "$dest/usr/local/bin/tand-model-refresh"
install -D -m 0644 "$source_dir/tand-model-refresh.service" "$dest/etc/systemd/system/tand-model-refresh.service"
install -D -m 0644 "$source_dir/tand-model-refresh.timer" "$dest/etc/systemd/system/tand-model-refresh.timer"
"$systemctl_cmd" daemon-reload
"$systemctl_cmd" enable tand-model-refresh.timer
# restart, not start: a new schedule in the timer unit applies now.
"$systemctl_cmd" restart tand-model-refresh.timer
echo "tand: model refresh scheduled ({{ refresh_schedule }} UTC); logs: journalctl -u tand-model-refresh"
