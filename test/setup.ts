// Vitest setup file: @peculiar/x509 needs the reflect-metadata polyfill loaded before it is imported.
import 'reflect-metadata';
