#!/bin/sh
echo office
