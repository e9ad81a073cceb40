"""setdhcp"""
