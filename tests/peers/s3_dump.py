#!/usr/bin/env python3
"""Independent S3 client for Vigil's tests (boto3, not Vigil's client).

Usage: s3_dump.py ENDPOINT BUCKET [PREFIX]

Lists every object under PREFIX and prints one JSON object per object on stdout:
{"key", "size", "body_hex"}. Exits 0 with no output when the bucket is empty; non-zero when the
bucket does not exist or the server is unreachable.
"""
import json
import sys

import boto3


def main():
    endpoint, bucket = sys.argv[1], sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            print(json.dumps({"key": o["Key"], "size": o["Size"], "body_hex": body.hex()}))


if __name__ == "__main__":
    main()
