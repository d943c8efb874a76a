"""moto's server, plus the three read-only Elastic Beanstalk platform calls `eb init -p BRANCH` makes.

moto 5.2 answers CreateApplication but not ListPlatformBranches, ListPlatformVersions or
DescribePlatformVersion, so `eb init` creates the application and then retries for minutes. This
script answers those three from moto's own list of solution stacks (its "AWS Solution Stack
Details"), for the Docker branches only, in the shapes of the Elastic Beanstalk API reference
(PlatformBranchSummary, PlatformSummary, PlatformDescription). Everything else is moto's.

Usage (what the tests run): python moto_eb_platforms.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import re
import sys

from moto.core.responses import ActionResult
from moto.elasticbeanstalk import responses

_DOCKER_STACK = re.compile(r"^64bit (Amazon Linux 2023|Amazon Linux 2) v([\d.]+) running Docker$")
_TIERS = ["WebServer/Standard", "Worker/SQS/HTTP"]


def _platforms(region: str) -> list[dict]:
    found = []
    for stack in responses.SOLUTION_STACK_DETAILS:
        match = _DOCKER_STACK.match(stack["SolutionStackName"])
        if match:
            system, version = match.groups()
            branch = f"Docker running on 64bit {system}"
            found.append({
                "PlatformArn": f"arn:aws:elasticbeanstalk:{region}::platform/{branch}/{version}",
                "PlatformOwner": "AWSElasticBeanstalk", "PlatformStatus": "Ready", "PlatformCategory": "Docker",
                "OperatingSystemName": "Amazon Linux", "SupportedTierList": _TIERS,
                "PlatformLifecycleState": "Recommended", "PlatformVersion": version,
                "PlatformBranchName": branch, "PlatformBranchLifecycleState": "Supported",
                "SolutionStackName": stack["SolutionStackName"], "PlatformName": branch,
            })
    return found


def _matches(item: dict, filters: list[dict], key: str) -> bool:
    for spec in filters or []:
        hit = item.get(spec[key]) in spec.get("Values", [])
        if (spec.get("Operator", "=") == "=") != hit:
            return False
    return True


def list_platform_branches(self):
    branches = {
        p["PlatformBranchName"]: {"PlatformName": "Docker", "BranchName": p["PlatformBranchName"], "LifecycleState": "Supported",
                                  "BranchOrder": 1, "SupportedTierList": _TIERS}
        for p in _platforms(self.region)
    }
    chosen = [b for b in branches.values() if _matches(b, self._get_param("Filters"), "Attribute")]
    return ActionResult({"PlatformBranchSummaryList": chosen})


_SUMMARY = ("PlatformArn", "PlatformOwner", "PlatformStatus", "PlatformCategory", "OperatingSystemName", "SupportedTierList",
            "PlatformLifecycleState", "PlatformVersion", "PlatformBranchName", "PlatformBranchLifecycleState")


def list_platform_versions(self):
    chosen = [p for p in _platforms(self.region) if _matches(p, self._get_param("Filters"), "Type")]
    return ActionResult({"PlatformSummaryList": [{k: p[k] for k in _SUMMARY} for p in chosen]})


def describe_platform_version(self):
    arn = self._get_param("PlatformArn")
    found = [p for p in _platforms(self.region) if p["PlatformArn"] == arn]
    return ActionResult({"PlatformDescription": found[0] if found else {}})


responses.EBResponse.list_platform_branches = list_platform_branches
responses.EBResponse.list_platform_versions = list_platform_versions
responses.EBResponse.describe_platform_version = describe_platform_version

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
